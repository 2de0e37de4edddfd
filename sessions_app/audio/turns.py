"""Turn detection: what ends a speaker's turn, a setting of each session.

It has the shape of OpenAI Realtime's ``turn_detection``:

- ``{"type": "server_vad", "silence_duration_ms": 600, "prefix_padding_ms": 300}``: the voice
  activity detector ends a turn after that much silence, and keeps that much audio from before
  the detected start of speech (so the first syllable is not cut). Both are optional; a
  ``threshold`` (0.0 to 1.0, higher hears less as speech) may be given too, and
  ``command_end`` (default true; this service's own): the turn ends sooner when the partial
  transcript is already a whole command (``sessions_app.audio.endpointing``).
- ``{"type": "none"}`` or ``None`` (manual): silence never ends a turn; only ``audio.commit``
  does (or the 30 s cap). Speech is still detected, for ``speech.started`` and the pre-roll.

:func:`parse` checks a client's value and returns a :class:`TurnDetection`, or raises
:class:`TurnDetectionError` with a message fit to send back. ``create_response`` and
``interrupt_response`` (OpenAI's) are accepted and ignored: this service always answers.
"""

from dataclasses import dataclass

FRAME_MS = 30  # the VAD's frame; durations are rounded to whole frames

SILENCE_MS_RANGE = (100, 5000)
PREFIX_MS_RANGE = (0, 1000)
# Long enough for a pause mid-sentence: a turn that is already a whole command ends sooner
# (``command_end``; sessions_app.audio.endpointing). Was 600 before command_end existed.
DEFAULT_SILENCE_MS = 800
DEFAULT_PREFIX_MS = 300
DEFAULT_THRESHOLD = 0.5
IGNORED_KEYS = frozenset({"create_response", "interrupt_response"})


class TurnDetectionError(ValueError):
    """A ``turn_detection`` value this service cannot use; ``str()`` says why (for the client)."""


@dataclass(frozen=True)
class TurnDetection:
    mode: str = "server_vad"  # or "none": manual, only audio.commit ends a turn
    silence_duration_ms: int = DEFAULT_SILENCE_MS
    prefix_padding_ms: int = DEFAULT_PREFIX_MS
    threshold: float = DEFAULT_THRESHOLD
    command_end: bool = True  # end early when the partial transcript is a whole command

    @property
    def manual(self) -> bool:
        return self.mode == "none"

    @property
    def aggressiveness(self) -> int:
        """WebRTC VAD's aggressiveness (0 to 3) for the threshold: 0.5 is WebRTC's 2."""
        return min(3, int(self.threshold * 4))

    def as_dict(self) -> dict:
        """What ``session.ready`` reports."""
        if self.manual:
            return {"type": "none"}
        return {
            "type": "server_vad",
            "silence_duration_ms": self.silence_duration_ms,
            "prefix_padding_ms": self.prefix_padding_ms,
            "threshold": self.threshold,
            "command_end": self.command_end,
        }


DEFAULT = TurnDetection()


def _whole_ms(config: dict, key: str, bounds: tuple[int, int], default: int) -> int:
    value = config.get(key, default)
    low, high = bounds
    if type(value) is not int or not low <= value <= high:
        raise TurnDetectionError(
            f"turn_detection.{key} must be a whole number from {low} to {high}"
        )
    return value


def parse(config: dict | None) -> TurnDetection:
    """A client's ``turn_detection`` (see the module's docstring) -> :class:`TurnDetection`."""
    if config is None:
        return TurnDetection(mode="none")
    if not isinstance(config, dict):
        raise TurnDetectionError("turn_detection must be an object or null")
    kind = config.get("type")
    if kind == "none":
        unknown = set(config) - {"type"} - IGNORED_KEYS
    elif kind == "server_vad":
        known = {"type", "silence_duration_ms", "prefix_padding_ms", "threshold", "command_end"}
        unknown = set(config) - known
        unknown -= IGNORED_KEYS
    else:
        raise TurnDetectionError('turn_detection.type must be "server_vad" or "none"')
    if unknown:
        raise TurnDetectionError(f"turn_detection has unknown fields: {', '.join(sorted(unknown))}")
    if kind == "none":
        return TurnDetection(mode="none")
    threshold = config.get("threshold", DEFAULT_THRESHOLD)
    if type(threshold) not in (int, float) or not 0.0 <= threshold <= 1.0:
        raise TurnDetectionError("turn_detection.threshold must be a number from 0.0 to 1.0")
    command_end = config.get("command_end", True)
    if type(command_end) is not bool:
        raise TurnDetectionError("turn_detection.command_end must be true or false")
    return TurnDetection(
        mode="server_vad",
        command_end=command_end,
        silence_duration_ms=_whole_ms(
            config, "silence_duration_ms", SILENCE_MS_RANGE, DEFAULT_SILENCE_MS
        ),
        prefix_padding_ms=_whole_ms(
            config, "prefix_padding_ms", PREFIX_MS_RANGE, DEFAULT_PREFIX_MS
        ),
        threshold=float(threshold),
    )
