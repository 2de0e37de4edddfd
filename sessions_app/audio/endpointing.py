"""Ending a turn early when what was said so far is already a whole command.

Silence alone ends a turn after the session's ``silence_duration_ms``. While the speaker
pauses, the pipeline asks :func:`silence_needed` about the live partial transcript:

- a command that cannot go on (``what is on my list``, ``add eggs to my list``, ``cancel the
  last task``, ``confirm``) ends after :data:`CLOSED_MS` of silence;
- a command whose text could go on (``create a task to grade the essays``, ``remind me to
  call mom tomorrow``) ends after :data:`OPEN_MS`;
- words that cannot be a whole sentence wait the full ``silence_duration_ms``, so that a
  speaker who pauses mid-sentence is not cut off: words a sentence does not end on ("remind
  me to", "add the", "call mom at"), or only the opening words of a command ("take a note",
  "add", "create a task", "what do i have": :func:`openings`);
- anything else, words that are no command but could be a whole sentence ("paper", a
  command misheard), ends after :data:`OPEN_MS` too: nothing suggests more is coming.

The intent parser (``tasks_app.intents``) decides what is a command; it runs on the event
loop once per pause and new partial (about 0.3 ms, a reminder's time phrase up to ~10 ms),
never per frame.
"""

import time
from functools import cache

from tasks_app import intents

CLOSED_MS = 240
OPEN_MS = 390
# Words a sentence does not end on: the speaker is in the middle of one.
_CONTINUING = (
    "a an the to and or but at on in of for with by from about into onto my your his her "
    "their our this that these those is are was be am i me we you it um uh er so then "
    "before after until when while if as than"
)
CONTINUING = frozenset(_CONTINUING.split())
CLOSED_INTENTS = frozenset({"list", "confirm", "cancel_last", "remove"})
DONE_WORDS = frozenset({"done", "finished", "complete", "completed"})


@cache
def openings() -> frozenset[str]:
    """Every beginning of a command that is not yet one: each template's words before its
    first wildcard, and every shorter run of them ("take", "take a", "take a note"; "what",
    ..., "what do i have" of "what do i have to do")."""
    from hassil.intents import TextSlotList
    from hassil.sample import sample_intents

    templates = intents.templates()
    # Every slot is a wildcard list (en.yaml's lists): a placeholder stops sampling there.
    stops = {name: TextSlotList.from_strings(["__slot__"]) for name in templates.slot_lists}
    found = set()
    for _, text in sample_intents(
        templates, slot_lists=stops, exclude_sentences_with_wildcards=False
    ):
        words = intents.normalise(text.split("__slot__")[0]).split()
        whole = "__slot__" not in text
        for end in range(1, len(words) + (0 if whole else 1)):
            found.add(" ".join(words[:end]))
    return frozenset(found)


def silence_needed(text: str) -> int | None:
    """Milliseconds of silence after which ``text`` is a whole turn; None: not a whole
    sentence yet (wait the session's full silence)."""
    norm = intents.normalise(text)
    words = norm.split()
    if not words or words[-1] in CONTINUING:
        return None
    name = intents.parse(norm, now=time.time()).name
    if name == "unknown":  # a command's opening words, or a whole sentence that is none
        return None if norm in openings() else OPEN_MS
    if name in CLOSED_INTENTS:
        return CLOSED_MS
    if name == "todo" and words[-1] == "list":
        return CLOSED_MS  # "add eggs to my list", "put tea on my shopping list"
    if name == "mark_done" and words[-1] in DONE_WORDS:
        return CLOSED_MS
    return OPEN_MS
