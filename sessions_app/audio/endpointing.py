"""Ending a turn early when what was said so far is already a whole command.

Silence alone ends a turn after the session's ``silence_duration_ms``. While the speaker
pauses, the pipeline asks :func:`silence_needed` about the live partial transcript:

- a command that cannot go on (``what is on my list``, ``add eggs to my list``, ``cancel the
  last task``, ``confirm``) ends after :data:`CLOSED_MS` of silence;
- a command whose text could go on (``create a task to grade the essays``, ``remind me to
  call mom tomorrow``) ends after :data:`OPEN_MS`;
- anything else (no command yet, or words that cannot end a sentence: "remind me to", "add
  the", "call mom at") waits the full ``silence_duration_ms``, so a speaker who pauses mid-
  sentence is not cut off.

The intent parser (``tasks_app.intents``) decides what is a command; it runs on the event
loop once per pause and new partial (about 0.3 ms, a reminder's time phrase up to ~10 ms),
never per frame.
"""

import time

from tasks_app import intents

CLOSED_MS = 240
OPEN_MS = 390
# Words a sentence does not end on: the speaker is in the middle of one.
_CONTINUING = (
    "a an the to and or but at on in of for with by from about into onto my your his her "
    "their our this that these those is are was be am i me we you it um uh er so then "
    "before after until when while if as than please"
)
CONTINUING = frozenset(_CONTINUING.split())
CLOSED_INTENTS = frozenset({"list", "confirm", "cancel_last", "remove"})
DONE_WORDS = frozenset({"done", "finished", "complete", "completed"})


def silence_needed(text: str) -> int | None:
    """Milliseconds of silence after which ``text`` is a whole turn; None: not a command yet."""
    norm = intents.normalise(text)
    words = norm.split()
    if not words or words[-1] in CONTINUING:
        return None
    name = intents.parse(norm, now=time.time()).name
    if name == "unknown":
        return None
    if name in CLOSED_INTENTS:
        return CLOSED_MS
    if name == "todo" and words[-1] == "list":
        return CLOSED_MS  # "add eggs to my list", "put tea on my shopping list"
    if name == "mark_done" and words[-1] in DONE_WORDS:
        return CLOSED_MS
    return OPEN_MS
