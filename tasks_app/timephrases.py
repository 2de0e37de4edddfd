"""Time phrases in what people say: found anywhere in a reminder, read in the session's zone.

``dateparser`` (with ``text2num`` for spoken numbers) does the reading, with the session's
local "now" as its base and future dates preferred. Around it, this module does what a voice
assistant needs and the parser does not:

* spoken forms become written ones first: "five thirty p m" -> "5:30 pm", "quarter past
  five" -> "5:15", "half an hour" -> "30 minutes", "nine o'clock" -> "9:00";
* a found phrase counts only if it names a time (a digit, a day, "tomorrow", "noon", ...), so
  "call may" or "march on" are not dates;
* a bare clock time means its next occurrence: "at 9" said at 10:00 is 21:00 today, "at 5:15"
  after 17:15 is tomorrow's 05:15, and "at noon" after noon is tomorrow's;
* a day without a time ("tomorrow", "on monday", "december 31") means 09:00 that day;
  "today" means 18:00;
* times in the past, or further away than ``REMINDER_HORIZON_DAYS``, are refused with a
  reason, never an exception ("in 99999999999 hours").

What is left after the phrase is cut out of the words as they were said is the task's text.
"""

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

from django.conf import settings

_NAMES_A_TIME = re.compile(
    r"\d|\b(?:yesterday|today|tonight|tomorrow|noon|midnight|morning|afternoon|evening|night|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|weekend|"
    r"minutes?|hours?|days?|weeks?|months?|years?)\b"
)
_TIME_OF_DAY = re.compile(
    r"\d:\d\d|\d\s*(?:am|pm)\b|\b(?:noon|midnight|morning|afternoon|evening|tonight|night)\b"
)
_DURATION = re.compile(
    r"\b(?:in|after|within)\b.*\b(?:seconds?|minutes?|hours?|days?|weeks?|months?|years?)\b|"
    r"\bnext (?:week|month|year)\b"
)
_COUNTED = re.compile(r"\bin (\d+) (second|minute|hour|day|week|month|year)s?\b")
_UNIT_SECONDS = {
    "second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400,
    "month": 31 * 86400, "year": 366 * 86400,
}  # fmt: skip
_CLOCK_DURATION = re.compile(r"\b(?:seconds?|minutes?|hours?)\b")


@dataclass(frozen=True)
class Found:
    """A reminder's time, or why there is none; ``rest`` is the task's text."""

    due: float | None
    rest: str
    problem: str = ""  # "past", "too_far", or ""


def _written(text: str, today: date) -> str:
    """Spoken time forms to the written ones dateparser reads."""
    from text_to_num import alpha2digit

    t = f" {text} "
    after = today + timedelta(days=2)  # dateparser reads "the day after tomorrow" as tomorrow
    t = re.sub(r" (?:the )?day after tomorrow ", f" on {after:%B} {after.day} {after.year} ", t)
    t = re.sub(r" (?:a )?half an hour ", " 30 minutes ", t)
    t = re.sub(r" an hour and a half ", " 90 minutes ", t)
    t = re.sub(r" (?:a )?quarter of an hour ", " 15 minutes ", t)
    t = alpha2digit(t, "en", threshold=0)
    t = re.sub(r" (?:a )?quarter past (\d{1,2}) ", r" \1:15 ", t)
    t = re.sub(r" half past (\d{1,2}) ", r" \1:30 ", t)
    t = re.sub(
        r" (?:a )?quarter to (\d{1,2}) ", lambda m: f" {(int(m.group(1)) - 2) % 12 + 1}:45 ", t
    )
    t = re.sub(r" (\d{1,2}) ?o ?'? ?clock ", r" \1:00 ", t)
    t = re.sub(r" (\d{1,2}) (\d\d) (?=am |pm |[a-z]|$)", r" \1:\2 ", t)
    t = re.sub(r"\b(at|by) (\d{1,2})(?= (?!am |pm |\d|:))", r"\1 \2:00", t)
    t = re.sub(r"\b(at|by) (\d{1,2})\s*$", r"\1 \2:00", t)
    return re.sub(r"\s+", " ", t).strip()


@cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _search(written: str, base: datetime):
    """Time phrases with their wall-clock times, relative to the naive local ``base``.

    The parser is given no zone: it computes on wall clocks, and this module attaches the
    session's zone itself, so a time across a DST change keeps the hour that was said.
    """
    from dateparser.search import search_dates

    found = search_dates(
        written, languages=["en"], settings={"PREFER_DATES_FROM": "future", "RELATIVE_BASE": base}
    )
    return [(p, d) for p, d in (found or []) if _NAMES_A_TIME.search(p)]


_NAMES_A_DAY = re.compile(
    r"\b(?:yesterday|today|tonight|tomorrow|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"week|january|february|march|april|may|june|july|august|september|october|november|"
    r"december|\d{1,2}(?:st|nd|rd|th))\b"
)
_BARE_HOUR = re.compile(r"^(?:at |by )?\d{1,2}:\d\d$|^(?:.* )?(?:at|by) \d{1,2}:\d\d$")


def _settle(phrase: str, when: datetime, local_now: datetime) -> datetime:
    """Apply the defaults the parser lacks (see the module's docstring)."""
    if _DURATION.search(phrase):
        return when  # "in 20 minutes", "next week": counted from now
    if re.search(r"\b(?:tonight|this (?:evening|afternoon))\b", phrase) and when <= local_now:
        return local_now + timedelta(hours=1)  # "tonight", said after 8 pm: soon, not past
    if not _TIME_OF_DAY.search(phrase):  # a day without a time
        if "today" in phrase:
            when = when.replace(hour=18, minute=0, second=0, microsecond=0)
            return when if when > local_now else local_now + timedelta(hours=1)
        return when.replace(hour=9, minute=0, second=0, microsecond=0)
    bare = bool(_BARE_HOUR.match(phrase)) and 1 <= when.hour <= 11  # no am, pm, noon, ...
    if _NAMES_A_DAY.search(phrase):
        # "friday at 5", "tomorrow at 3:30": afternoon hours are what people mean
        return when + timedelta(hours=12) if bare and when.hour <= 6 else when
    # A clock time alone: its next occurrence, today or tomorrow.
    base = datetime.combine(local_now.date(), when.timetz().replace(tzinfo=None), local_now.tzinfo)
    candidates = [base, base + timedelta(hours=12)] if bare else [base]
    candidates += [c + timedelta(days=1) for c in candidates]
    return min(c for c in candidates if c > local_now)


def _cut(words: list[str], phrase: str, today: date) -> str:
    """The words as said, less the span whose written form is ``phrase``."""
    for size in range(len(words), 0, -1):
        for start in range(len(words) - size + 1):
            if _written(" ".join(words[start : start + size]), today) == phrase:
                return " ".join(words[:start] + words[start + size :])
    return _written(" ".join(words), today).replace(phrase, " ")


def _tidy(rest: str) -> str:
    rest = re.sub(r"\s+", " ", rest).strip()
    rest = re.sub(r"^(?:to|that|about|for)\s+", "", rest)
    rest = re.sub(r"\s+(?:at|on|by|for|in)$", "", rest)
    return rest.strip()


def find(text: str, *, now: float, zone: str) -> Found:
    """The time phrase in ``text`` (lower-case, normalised), in the zone named ``zone``."""
    tz = _zone(zone)
    local_now = datetime.fromtimestamp(now, tz)
    written = _written(text, local_now.date())
    base = local_now.replace(tzinfo=None)
    counted = _COUNTED.search(written)
    horizon = settings.REMINDER_HORIZON_DAYS * 86400
    if counted and int(counted.group(1)) * _UNIT_SECONDS[counted.group(2)] > horizon:
        # "in 99999999999 hours": exact integers say it is too far, before any date arithmetic
        return Found(None, _tidy(written.replace(counted.group(0), " ")), "too_far")
    try:
        hits = _search(written, base)
    except (OverflowError, ValueError, ArithmeticError):
        hits = []
    if not hits:
        return Found(None, _tidy(text))
    phrase, when = hits[-1]  # the time is usually said last when there are two candidates
    try:
        if _DURATION.search(phrase) and _CLOCK_DURATION.search(phrase):
            # "in 3 hours": elapsed time, whatever the wall clock does meanwhile
            when = datetime.fromtimestamp(now + (when - base).total_seconds(), tz)
        else:
            when = _settle(phrase, when.replace(tzinfo=tz), local_now)
    except (OverflowError, ValueError):
        return Found(None, _tidy(text), "too_far")
    rest = _tidy(_cut(text.split(), phrase, local_now.date()))
    if when.timestamp() <= now:
        return Found(None, rest, "past")
    if when - local_now > timedelta(days=settings.REMINDER_HORIZON_DAYS):
        return Found(None, rest, "too_far")
    return Found(when.timestamp(), rest)


def spoken(ts: float, zone: str, *, now: float) -> str:
    """A due time as a reply says it, in the session's zone: "3:30 PM today", "9 AM on Mon,
    Nov 30"."""
    tz = _zone(zone)
    when = datetime.fromtimestamp(ts, tz)
    today = datetime.fromtimestamp(now, tz).date()
    hour = when.strftime("%I").lstrip("0")
    clock = f"{hour}:{when:%M} {when:%p}" if when.minute else f"{hour} {when:%p}"
    if when.time() == time(12, 0):
        clock = "noon"
    if when.date() == today:
        day = "today"
    elif when.date() == today + timedelta(days=1):
        day = "tomorrow"
    else:
        day = f"on {when:%a, %b} {when.day}"
        if when.year != today.year:
            day += f", {when.year}"
    return f"{clock} {day}"
