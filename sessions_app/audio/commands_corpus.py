"""The embedded recognizer's language model, generated from the sentence templates.

PocketSphinx's general English model recognises synthetic or accented speech poorly, so the
embedded engine decodes with a small trigram model of the command domain. There is one source
for what can be said and what it means: ``tasks_app/sentences/en.yaml``, the templates the
intent matcher uses. This module samples every template, filling its wildcards with the
values in ``tasks_app/sentences/lm_samples.yaml`` (the words the engine is meant to hear
well), and builds the model from those sentences. Phrases outside that vocabulary are
recognised badly or not at all: a deployment that needs open dictation plugs in another engine
(``RECOGNIZER_ENGINE``).

``python -m sessions_app.audio.commands_corpus`` rewrites ``commands.lm`` and its digest;
a test fails when the templates or samples change and the model was not rebuilt.
"""

import hashlib
import io
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
    """The model's training sentences, in a stable order."""
    import yaml
    from hassil.intents import TextSlotList
    from hassil.sample import sample_intents

    from tasks_app.intents import templates

    samples = yaml.safe_load(SAMPLES.read_text())
    values = dict(samples["values"])
    when = _expand(samples["when"], samples["lists"])
    values["reminder"] = [f"{what} {w}".strip() for what in values["what"] for w in when]
    slot_lists = {name: TextSlotList.from_strings(v) for name, v in values.items()}
    out = []
    for intent, text in sample_intents(
        templates(), slot_lists=slot_lists, exclude_sentences_with_wildcards=False
    ):
        out.extend([" ".join(text.split())] * samples["repeat"].get(intent, 1))
    return out


def digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def build_arpa() -> str:
    from pocketsphinx.lm import ArpaBoLM

    lm = ArpaBoLM(text="\n".join(sentences()), add_start=True, discount_mass=0.02)
    lm.compute()
    buf = io.StringIO()
    lm.write(buf)
    return buf.getvalue()


LM_PATH = Path(__file__).with_name("commands.lm")
DIGEST_PATH = Path(__file__).with_name("commands.lm.sha256")

if __name__ == "__main__":
    import django

    django.setup()
    lines = sentences()
    LM_PATH.write_text(build_arpa())
    DIGEST_PATH.write_text(digest(lines) + "\n")
    print(f"wrote {LM_PATH} ({len(lines)} sentences)")
