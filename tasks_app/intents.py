"""Text to intent: one parser for recognized speech and for text typed on the device.

Speech arrives lower-case with numbers as words ("in five minutes", "at three thirty p m"),
typed text with digits and punctuation; both normalise to the same form first.
"""

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# A due time further ahead than this is refused with a polite reply, never a task: absurd
# numbers ("in 99999999999 hours", 400 digits) cannot reach the clock's arithmetic.
MAX_AHEAD_SECONDS = 366 * 86400
_MAX_DIGITS = 9  # a longer number is certainly too far ahead; it is never converted
TOO_FAR = "too_far"

_NUMBERS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "a": 1, "an": 1,
}  # fmt: skip


@dataclass(frozen=True)
class Intent:
    name: str  # reminder, todo, note, list, cancel_last, confirm, unknown
    text: str = ""
    slots: dict = field(default_factory=dict)
    problem: str = ""  # why the intent cannot be carried out (TOO_FAR), or ""


def normalise(text: str) -> str:
    text = text.lower().strip()
    text = re.sub(r"\bp\.? ?m\.?(?=\s|$)", "pm", text)
    text = re.sub(r"\ba\.? ?m\.?(?=\s|$)", "am", text)
    text = re.sub(r"[^\w\s:']", " ", text)
    text = text.replace("what's", "what is").replace("to-do", "todo").replace("to do", "todo")
    return re.sub(r"\s+", " ", text).strip()


def _number(words: list[str]) -> tuple[int | None, int]:
    """Parse a number at the start of ``words``: (value, words used)."""
    if not words:
        return None, 0
    if words[0].isdecimal():  # not isdigit(): "²" is a digit that int() refuses
        if len(words[0]) > _MAX_DIGITS:
            return _HUGE, 1
        return int(words[0]), 1
    if words[0] not in _NUMBERS:
        return None, 0
    value = _NUMBERS[words[0]]
    if value >= 20 and len(words) > 1 and words[1] in _NUMBERS and _NUMBERS[words[1]] < 10:
        return value + _NUMBERS[words[1]], 2
    return value, 1


_HUGE = 10**_MAX_DIGITS  # stands for any longer number: far past MAX_AHEAD_SECONDS in any unit
_UNITS = {"second": 1, "seconds": 1, "minute": 60, "minutes": 60, "hour": 3600, "hours": 3600}


def _parse_when(words: list[str], now: float) -> tuple[float | None, int]:
    """The due-time phrase that ends a reminder: (due, index where it starts).

    A due time past ``MAX_AHEAD_SECONDS`` comes back as ``inf``.
    """
    for start in range(len(words)):
        due = _when(words[start:], now)
        if due is not None:
            return due, start
    return None, len(words)


def _when(tail: list[str], now: float) -> float | None:
    head, rest = tail[0], tail[1:]
    if head == "in":
        value, used = _number(rest)
        if value is not None and len(rest) == used + 1 and rest[used] in _UNITS:
            ahead = value * _UNITS[rest[used]]  # ints: exact, and never an OverflowError
            return now + ahead if ahead <= MAX_AHEAD_SECONDS else float("inf")
    elif head == "at":
        hm = _clock_time(rest)
        if hm is not None:
            due = _at(now, *hm, days=0)
            return due if due > now else due + 86400
    elif head == "today" and not rest:
        due = _at(now, 18, 0, days=0)
        return due if due > now else now + 3600
    elif head == "tonight" and not rest:
        due = _at(now, 20, 0, days=0)
        return due if due > now else now + 3600
    elif head == "tomorrow":
        if not rest:
            return _at(now, 9, 0, days=1)
        hm = _clock_time(rest[1:]) if rest[0] == "at" else None
        if hm is not None:
            return _at(now, *hm, days=1)
    return None


def _at(now: float, hour: int, minute: int, *, days: int) -> float:
    base = datetime.fromtimestamp(now)
    due = base.replace(hour=hour, minute=minute, second=0, microsecond=0) + timedelta(days=days)
    return due.timestamp()


def _clock_time(words: list[str]) -> tuple[int, int] | None:
    """``3``, ``3:30pm``, ``three thirty p m``, ``nine o'clock``: (hour, minute) or None."""
    if not words:
        return None
    m = re.fullmatch(r"(\d{1,2})(?::(\d{2}))?(am|pm)?", "".join(words[:2]))
    if m and len(words) <= 2:
        hour, minute, ampm = int(m.group(1)), int(m.group(2) or 0), m.group(3)
    else:
        hour, used = _number(words)
        if hour is None:
            return None
        rest = words[used:]
        minute = 0
        if rest and rest[0] not in ("am", "pm", "o'clock", "oclock"):
            minute, used2 = _number(rest)
            if minute is None:
                return None
            rest = rest[used2:]
        if rest and rest[0] in ("o'clock", "oclock"):
            rest = rest[1:]
        ampm = rest[0] if rest and rest[0] in ("am", "pm") else None
        if len(rest) > (1 if ampm else 0):
            return None
    if not (0 <= minute < 60) or not (0 <= hour <= 23):
        return None
    if ampm == "pm" and hour < 12:
        hour += 12
    if ampm == "am" and hour == 12:
        hour = 0
    return hour, minute


_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("list", re.compile(r"^(?:please )?what is on my\b")),
    ("cancel_last", re.compile(r"^(?:please )?cancel (?:the )?last\b")),
    ("confirm", re.compile(r"^(?:confirm|yes|yes please|confirmed)$")),
    ("reminder", re.compile(r"^(?:please )?remind me (?:to )?(?P<what>.+)$")),
    ("todo", re.compile(r"^(?:please )?(?:create|make|add) a (?:new )?task (?:to )?(?P<what>.+)$")),
    ("todo", re.compile(r"^(?:please )?add (?P<what>.+?) to my\b")),
    ("note", re.compile(r"^(?:please )?(?:take|make) a note (?:that |of )?(?P<what>.+)$")),
]


def parse(text: str, *, now: float) -> Intent:
    """The intent of one utterance (CONTRACT section 2a)."""
    norm = normalise(text)
    for name, pattern in _PATTERNS:
        m = pattern.match(norm)
        if not m:
            continue
        what = (m.groupdict().get("what") or "").strip()
        if name == "reminder":
            words = what.split()
            due, start = _parse_when(words, now)
            what = " ".join(words[:start]).strip()
            if what in ("", "to"):
                continue
            if due is not None and due - now > MAX_AHEAD_SECONDS:
                return Intent("reminder", what, problem=TOO_FAR)
            return Intent("reminder", what, {"due_at": due if due is not None else now + 3600})
        if name in ("todo", "note") and not what:
            continue
        return Intent(name, what)
    return Intent("unknown")
