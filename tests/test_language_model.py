"""The recognizer's language model comes from the intent templates: one source for both."""

from pathlib import Path

from sessions_app.audio import commands_corpus
from tasks_app import intents


def test_the_committed_language_model_was_built_from_the_current_templates():
    """Change en.yaml or lm_samples.yaml and forget to rebuild commands.lm: this fails."""
    built_from = commands_corpus.DIGEST_PATH.read_text().strip()
    assert commands_corpus.digest(commands_corpus.sentences()) == built_from, (
        "rebuild it: python -m sessions_app.audio.commands_corpus"
    )


def test_every_sentence_the_model_learns_is_understood_as_its_template_says():
    """The templates generate the model's sentences, and match them back to an intent."""
    wrong = []
    for text in sorted(set(commands_corpus.sentences()))[::50]:  # a spread of all of them
        if intents.parse(text, now=1_800_000_000.0).name == "unknown":
            wrong.append(text)
    assert wrong == []


def test_the_model_knows_every_word_the_templates_use():
    words = set(commands_corpus.LM_PATH.read_text().split())
    for word in ("remind", "reminder", "confirm", "mark", "done", "remove", "shopping", "list"):
        assert word in words, word


def test_the_committed_dictionary_spells_every_word_of_the_model_as_the_package_does():
    """The embedded engine loads commands.dict instead of the package's 135,000 words: a word
    the model has and the dictionary lacks could never be heard; rebuilding both keeps them in
    step."""
    from pocketsphinx import get_model_path

    arpa = commands_corpus.LM_PATH.read_text()
    committed = commands_corpus.DICT_PATH.read_text().splitlines()
    spelled = {line.split(" ", 1)[0].split("(")[0] for line in committed}
    assert spelled == commands_corpus.lm_words(arpa)
    package = (Path(get_model_path()) / "en-us" / "cmudict-en-us.dict").read_text().splitlines()
    variants = [line for line in package if line.split(" ", 1)[0].split("(")[0] in spelled]
    assert committed == variants, "rebuild it: python -m sessions_app.audio.commands_corpus"
    assert "remind R IY M AY N D" in committed and "a(2) EY" in committed
