"""Text to intent: one parser for recognized speech and for text typed on the device.

The sentence templates in ``tasks_app/sentences/en.yaml`` say what can be said and what it
means; hassil (Home Assistant's intent matcher) matches an utterance against them. A
reminder's time phrase may stand anywhere in it: ``tasks_app.timephrases`` reads it in the
session's time zone and cuts it out, and what is left is the reminder's text.
"""

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tasks_app import timephrases

TEMPLATES = Path(__file__).with_name("sentences") / "en.yaml"
PAST, TOO_FAR = "past", "too_far"  # why a reminder's time can't be (Intent.problem)
MAX_UTTERANCE_WORDS = 60  # longer text is no command: it is not matched (and never slow)
TEXT_SLOTS = ("reminder", "what", "item", "note")  # the wildcards that carry a task's text


@dataclass(frozen=True)
class Intent:
    name: str  # reminder, todo, note, list, mark_done, remove, cancel_last, confirm, unknown
    text: str = ""
    slots: dict = field(default_factory=dict)
    problem: str = ""  # why a reminder's time can't be: PAST, TOO_FAR, or ""


def normalise(text: str) -> str:
    """Lower case, spoken and typed forms alike: "3 P.M." -> "3 pm", "what's" -> "what is"."""
    text = text.lower().strip()
    text = re.sub(r"\bp\.? ?m\.?(?=\s|$)", "pm", text)
    text = re.sub(r"\ba\.? ?m\.?(?=\s|$)", "am", text)
    text = text.replace("what's", "what is").replace("to-do", "todo")
    text = re.sub(r"[^\w\s:']", " ", text)
    return re.sub(r"\s+", " ", text).strip()


@cache
def templates():
    """The compiled sentence templates (read once per process)."""
    import yaml
    from hassil import Intents

    return Intents.from_dict(yaml.safe_load(TEMPLATES.read_text()))


def parse(text: str, *, now: float, zone: str = "UTC") -> Intent:
    """The intent of one utterance (CONTRACT section 2a), times read in ``zone``."""
    from hassil.recognize import recognize_best

    norm = normalise(text)
    if not norm or len(norm.split()) > MAX_UTTERANCE_WORDS:
        return Intent("unknown")
    result = recognize_best(norm, templates())  # the most literal match wins
    if result is None:
        return Intent("unknown")
    name = result.intent.name
    found = {n: str(e.value).strip() for n, e in result.entities.items()}
    slot = next((found[n] for n in TEXT_SLOTS if n in found), "")
    if name == "reminder":
        found = timephrases.find(slot, now=now, zone=zone)
        if not found.rest:
            return Intent("unknown")
        if found.problem:
            return Intent("reminder", found.rest, problem=found.problem)
        due = found.due if found.due is not None else now + 3600
        return Intent("reminder", found.rest, {"due_at": due, "timed": found.due is not None})
    if name in ("todo", "note", "mark_done", "remove") and not slot:
        return Intent("unknown")
    return Intent(name, slot)
