"""The embedded recognizer's language model, generated from the sentence templates.

PocketSphinx's general English model recognises synthetic or accented speech poorly, so the
embedded engine decodes with a small trigram model of the command domain. There is one source
for what can be said and what it means: ``tasks_app/sentences/en.yaml``, the templates the
intent matcher uses. This module samples every template, filling its wildcards with the
values in ``tasks_app/sentences/lm_samples.yaml`` (the words the engine is meant to hear
well), and builds the model from those sentences. Phrases outside that vocabulary are
recognised badly or not at all: a deployment that needs open dictation plugs in another engine
(``RECOGNIZER_ENGINE``).

``python -m sessions_app.audio.commands_corpus`` rewrites ``commands.lm``, its digest and
``commands.dict``; a test fails when the templates or samples change and they were not rebuilt.

``commands.dict`` holds the pronunciations (from the dictionary the ``pocketsphinx`` package
ships) of the model's words only: a decoder with the package's whole dictionary (135,000
words) took 1.5-5 s to load and about 42 MB, one with these few hundred entries about 15 ms
and 7 MB, and it decodes the same, since a decoder searches only words its model has.
"""

import hashlib
import io
import re
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "tasks_app" / "sentences" / "lm_samples.yaml"


def _expand(templates: list[str], lists: dict[str, list[str]]) -> list[str]:
    """Every text a list of hassil templates can produce, given its lists' values."""
    from hassil.expression import Sentence
    from hassil.intents import TextSlotList
    from hassil.parse_expression import parse_sentence
    from hassil.sample import sample_sentence

    slot_lists = {name: TextSlotList.from_strings(values) for name, values in lists.items()}
    out = []
    for template in templates:
        if not template:
            out.append("")
            continue
        sentence: Sentence = parse_sentence(template)
        out.extend(" ".join(t.split()) for t in sample_sentence(sentence, slot_lists, {}))
    return out


def sentences() -> list[str]:
    """The model's training sentences, in a stable order.

    Each template expands to several forms (its optional words and alternatives), and a
    wildcard takes many values. Crossing them all would give the longest template tens of
    thousands of sentences and drown the short commands, and spreading them evenly would make
    the rare phrasings ("please set a reminder", "read me my to do list") as likely as the
    usual ones. So each value is said in the intent's usual form (``usual`` in
    lm_samples.yaml, which must be a form of its templates), and one value in ``variety`` in
    another form, in turn: every form is in the corpus, and an intent weighs about as many
    sentences as it has values (times its ``repeat``).
    """
    import yaml
    from hassil.intents import TextSlotList
    from hassil.sample import sample_intents

    from tasks_app.intents import templates

    samples = yaml.safe_load(SAMPLES.read_text())
    values = dict(samples["values"])
    when = _expand(samples["when"], samples["lists"])
    values["reminder"] = [f"{what} {w}".strip() for what in values["what"] for w in when]
    marks = {name: f"__{name}__" for name in values}
    placeholders = {name: TextSlotList.from_strings([mark]) for name, mark in marks.items()}
    skeletons: dict[tuple[str, str | None], list[str]] = {}
    for intent, text in sample_intents(
        templates(), slot_lists=placeholders, exclude_sentences_with_wildcards=False
    ):
        slot = next((name for name, mark in marks.items() if mark in text), None)
        skeletons.setdefault((intent, slot), []).append(" ".join(text.split()))
    out = []
    every = samples["variety"]
    for (intent, slot), forms in skeletons.items():
        repeat = samples["repeat"].get(intent, 1)
        usual = samples["usual"][intent if slot is None else f"{intent}/{slot}"]
        usual = [u.replace("{" + str(slot) + "}", marks.get(slot, "")) for u in _listed(usual)]
        if not set(usual) <= set(forms):
            raise ValueError(f"lm_samples: a usual form of {intent} is no form of its templates")
        if slot is None:  # a command without words of its own: its usual forms, then each once
            out.extend(u for u in usual for _ in range(repeat))
            out.extend(_fill(form, marks, values) for form in forms)
            continue
        for r in range(repeat):
            for i, value in enumerate(values[slot]):
                chosen = [usual[i % len(usual)]]
                if i % every == 0:  # now and then another form, in turn
                    chosen.append(forms[(i // every + r) % len(forms)])
                out.extend(
                    _fill(form.replace(marks[slot], value), marks, values) for form in chosen
                )
    return out


def _fill(text: str, marks: dict[str, str], values: dict[str, list[str]]) -> str:
    """A form's other wildcards (one besides its main one) take their first value."""
    for name, mark in marks.items():
        text = text.replace(mark, values[name][0])
    return text


def _listed(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def build_arpa() -> str:
    from pocketsphinx.lm import ArpaBoLM

    lm = ArpaBoLM(text="\n".join(sentences()), add_start=True, discount_mass=0.02)
    lm.compute()
    buf = io.StringIO()
    lm.write(buf)
    return buf.getvalue()


def lm_words(arpa: str) -> set[str]:
    """The words of an ARPA model's unigrams."""
    words, section = set(), None
    for line in arpa.splitlines():
        line = line.strip()
        if line.startswith("\\"):
            section = line
        elif section == "\\1-grams:" and line:
            words.add(line.split()[1])
    return words - {"<s>", "</s>"}


def build_dictionary(arpa: str) -> str:
    """The pronunciations of the model's words (and their variants, ``word(2)``), in the
    package dictionary's order and format."""
    from pocketsphinx import get_model_path

    words = lm_words(arpa)
    package = Path(get_model_path()) / "en-us" / "cmudict-en-us.dict"
    lines = []
    for line in package.read_text().splitlines():
        word = line.split(" ", 1)[0]
        if re.sub(r"\(\d+\)$", "", word) in words:
            lines.append(line)
    return "\n".join(lines) + "\n"


LM_PATH = Path(__file__).with_name("commands.lm")
DIGEST_PATH = Path(__file__).with_name("commands.lm.sha256")
DICT_PATH = Path(__file__).with_name("commands.dict")

if __name__ == "__main__":
    import django

    django.setup()
    lines = sentences()
    arpa = build_arpa()
    LM_PATH.write_text(arpa)
    DIGEST_PATH.write_text(digest(lines) + "\n")
    DICT_PATH.write_text(build_dictionary(arpa))
    print(f"wrote {LM_PATH} ({len(lines)} sentences) and {DICT_PATH}")
