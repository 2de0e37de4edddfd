"""``/v1/realtime``: an OpenAI-Realtime-compatible transcription socket (CONTRACT section 2c).

A wire adapter, like ``/ws/voice``: the session, its limit, token, runtime, events and privacy
are the same; only the frames differ. The official ``openai`` SDK's realtime client connects
unchanged with ``base_url="http://HOST/v1"`` and the session token as its ``api_key``: the
token is the bearer key (``Authorization: Bearer``, or the browsers' ``openai-insecure-api-key.``
subprotocol), and it names its session (``core.access``). A wrong key is refused at the
handshake with 401 where the server can send one (uvicorn), with the server's 403 otherwise.

Both shapes of the API are spoken: GA (``session.update`` with ``{"type": "transcription",
"audio": {"input": ...}}``) and beta (``OpenAI-Beta: realtime=v1``, ``transcription_session.update``
with ``input_audio_format`` and friends). The runtime's events become OpenAI's:

=====================  ==================================================================
runtime event          OpenAI event(s)
=====================  ==================================================================
``speech.started``     ``input_audio_buffer.speech_started`` (server VAD only)
``speech.stopped``     ``input_audio_buffer.speech_stopped`` (server VAD only),
                       ``input_audio_buffer.committed``, ``conversation.item.added``
                       (beta: ``conversation.item.created``)
``transcript.partial`` ``conversation.item.input_audio_transcription.delta``
``transcript.final``   the last ``...delta`` and ``...completed``
a failed recognition   ``...completed`` with ``""`` (nothing heard) or ``...failed``
=====================  ==================================================================

Everything else the session emits (tasks, replies) is not part of this dialect and is not
sent. docs/protocol.md has the whole dialect.
"""

import binascii
import contextlib
import json
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import numpy as np
import structlog
from channels.exceptions import ChannelFull
from django.conf import settings

from core import metrics
from core.access import bearer_token, session_token_subject
from core.kv import KVUnavailable
from sessions_app import services
from sessions_app.audio.turns import DEFAULT_PREFIX_MS
from sessions_app.consumers import VoiceConsumer
from sessions_app.protocol import CLOSE_NAMES
from sessions_app.runtime import TranscriptionError, TurnDetectionError, short

logger = structlog.get_logger(__name__)

KEY_SUBPROTOCOL = "openai-insecure-api-key."
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"

# OpenAI's input formats -> (the runtime's encoding, sample rate). pcm16 is 24 kHz, as OpenAI
# defines it; A-law is expanded to PCM16 here (the runtime speaks PCM16 and mu-law).
FORMATS = {
    "pcm16": ("pcm_s16le", 24000),
    "g711_ulaw": ("mulaw", 8000),
    "g711_alaw": ("pcm_s16le", 8000),
}
GA_FORMATS = {"audio/pcm": "pcm16", "audio/pcmu": "g711_ulaw", "audio/pcma": "g711_alaw"}
GA_FORMAT_NAMES = {v: k for k, v in GA_FORMATS.items()}
BYTES_PER_MS = {"pcm16": 48, "g711_ulaw": 8, "g711_alaw": 8}  # as the client sends them

DEFAULT_TURN_DETECTION = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
}
# A failed recognition (the runtime's error codes) -> what the item gets.
NOTHING_HEARD = "no_speech_recognized"
RECOGNITION_FAILURES = ("recognizer_busy", "recognition_failed")
DENIAL_CLOSE_CODES = {401: 4401, 404: 4404, 503: 1011}
MAX_ITEMS = 64  # items awaiting their transcript; older ones are forgotten


def _alaw_table() -> np.ndarray:
    """G.711 A-law code -> PCM16 sample (ITU-T G.711, as in sox and Python's audioop)."""
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    return np.where(sign != 0, magnitude, -magnitude).astype("<i2")


ALAW_TO_PCM = _alaw_table()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


# deltas ------------------------------------------------------------------------------------------
def stable_text(previous: str, hypothesis: str) -> str:
    """The words two hypotheses in a row agree on, but the newest's last (still changing)."""
    agreed = []
    for old, new in zip(previous.split(), hypothesis.split()[:-1], strict=False):
        if old != new:
            break
        agreed.append(new)
    return " ".join(agreed)


def delta_for(sent: str, target: str) -> str:
    """What to append to the text already sent (``sent``) to reach ``target``; ``""`` when
    ``target`` is no extension of it (a recognizer revised an earlier word: the deltas stop,
    and ``completed`` carries the whole transcript)."""
    if len(target) <= len(sent) or not target.startswith(sent):
        return ""
    if sent and target[len(sent)] != " ":
        return ""  # the last word sent was cut short: it changed
    return target[len(sent) :]


# the session's configuration ---------------------------------------------------------------------
class ConfigError(ValueError):
    def __init__(self, message: str, param: str | None, code: str = "invalid_value"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def _object(value, param: str, *, nullable: bool) -> dict | None:
    if value is None and nullable:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"Invalid type for '{param}': expected an object", param, "invalid_type")
    return value


@dataclass
class TranscriptionConfig:
    """What a client configured; the runtime applies the format and turn detection."""

    format: str = "pcm16"
    transcription: dict | None = field(default_factory=dict)
    turn_detection: dict | None = field(default_factory=lambda: dict(DEFAULT_TURN_DETECTION))
    turn_detection_at: str = "session.turn_detection"  # where the client put it (errors)
    transcription_at: str = "session.input_audio_transcription"
    transcription_changed: bool = False  # by this update: the recognizer is told
    noise_reduction: dict | None = None
    include: list | None = None

    # reading --------------------------------------------------------------------------------
    def read_flat(self, session: dict, at: str = "session") -> None:
        """The beta shape: ``input_audio_format``, ``input_audio_transcription``, ..."""
        if "input_audio_format" in session:
            name = session["input_audio_format"]
            if not isinstance(name, str) or name not in FORMATS:
                raise ConfigError(
                    f"Invalid value for '{at}.input_audio_format': use pcm16, g711_ulaw or "
                    "g711_alaw",
                    f"{at}.input_audio_format",
                )
            self.format = name
        self._read_common(
            session,
            at,
            transcription="input_audio_transcription",
            noise_reduction="input_audio_noise_reduction",
        )

    def read_ga(self, session: dict) -> None:
        """The GA shape: ``{"type": "transcription", "audio": {"input": {...}}}``."""
        kind = session.get("type", "transcription")
        if kind != "transcription":
            raise ConfigError(
                "This server only transcribes: use a transcription session "
                '(session.type "transcription")',
                "session.type",
                "unsupported_session_type",
            )
        audio = _object(session.get("audio", {}), "session.audio", nullable=False)
        audio_in = _object(audio.get("input", {}), "session.audio.input", nullable=False)
        at = "session.audio.input"
        if "format" in audio_in:
            fmt = _object(audio_in["format"], f"{at}.format", nullable=False)
            kind = fmt.get("type", "audio/pcm")
            name = GA_FORMATS.get(kind) if isinstance(kind, str) else None
            rate = fmt.get("rate", 24000)
            if name is None or (name == "pcm16" and rate != 24000):
                raise ConfigError(
                    f"Invalid value for '{at}.format': use audio/pcm (24000 Hz), audio/pcmu or "
                    "audio/pcma",
                    f"{at}.format",
                )
            self.format = name
        self._read_common(
            audio_in, at, transcription="transcription", noise_reduction="noise_reduction"
        )
        if "include" in session:
            self.include = session["include"]

    def _read_common(self, body: dict, at: str, *, transcription: str, noise_reduction: str):
        if transcription in body:
            value = _object(body[transcription], f"{at}.{transcription}", nullable=True)
            self.transcription = None if value is None else {**(self.transcription or {}), **value}
            self.transcription_at = f"{at}.{transcription}"
            self.transcription_changed = value is not None
        if noise_reduction in body:
            self.noise_reduction = _object(
                body[noise_reduction], f"{at}.{noise_reduction}", nullable=True
            )
        if "include" in body:
            self.include = body["include"]
        if "turn_detection" in body:
            self.turn_detection = self._turn_detection(body["turn_detection"], at)
            self.turn_detection_at = f"{at}.turn_detection"

    @staticmethod
    def _turn_detection(value, at: str) -> dict | None:
        """OpenAI's ``turn_detection``: null (manual), ``server_vad`` with its timings, or
        ``semantic_vad``, which is served as server VAD with the default timings. The values
        are checked by the runtime when they are applied (``sessions_app.audio.turns``)."""
        param = f"{at}.turn_detection"
        value = _object(value, param, nullable=True)
        if value is None:
            return None
        kind = value.get("type", "server_vad")
        if kind not in ("server_vad", "semantic_vad"):
            raise ConfigError(
                f"Invalid value for '{param}.type': use server_vad or semantic_vad", f"{param}.type"
            )
        out = dict(DEFAULT_TURN_DETECTION)
        if kind == "server_vad":
            for name in ("threshold", "prefix_padding_ms", "silence_duration_ms"):
                if value.get(name) is not None:
                    out[name] = value[name]
        return out

    # the runtime's side -----------------------------------------------------------------------
    def runtime_format(self) -> tuple[str, int]:
        return FORMATS[self.format]

    def runtime_turn_detection(self) -> dict | None:
        """None: manual turns (only a commit ends one); else server VAD's timings."""
        if self.turn_detection is None:
            return None
        return {
            "type": "server_vad",
            # OpenAI's semantics: silence ends a turn, never a transcript that reads complete
            "command_end": False,
            "silence_duration_ms": self.turn_detection["silence_duration_ms"],
            "prefix_padding_ms": self.turn_detection["prefix_padding_ms"],
            "threshold": self.turn_detection["threshold"],
        }

    # writing ----------------------------------------------------------------------------------
    def runtime_transcription(self) -> dict:
        """The recognizer's language and phrase hints: ``language`` as given, hints from
        ``keywords`` (GA) or a ``prompt`` read as a list of phrases (as whisper-1 reads it)."""
        value = self.transcription or {}
        keywords = value.get("keywords")
        if keywords is None:
            prompt = value.get("prompt") if isinstance(value.get("prompt"), str) else ""
            phrases = (p.strip() for p in re.split(r"[,;\n]", prompt))
            keywords = [p for p in phrases if 0 < len(p) <= 100][:100]
        return {"language": value.get("language") or None, "hints": keywords}

    def _transcription_out(self) -> dict | None:
        if self.transcription is None:
            return None
        return {"model": "gpt-4o-transcribe", "language": None, "prompt": "", **self.transcription}

    def render_ga(self, session_id: str, expires_at: float) -> dict:
        fmt = {"type": GA_FORMAT_NAMES[self.format]}
        if self.format == "pcm16":
            fmt["rate"] = 24000
        return {
            "type": "transcription",
            "object": "realtime.transcription_session",
            "id": session_id,
            "expires_at": int(expires_at),
            "audio": {
                "input": {
                    "format": fmt,
                    "transcription": self._transcription_out(),
                    "noise_reduction": self.noise_reduction,
                    "turn_detection": self.turn_detection,
                }
            },
            "include": self.include,
        }

    def render_flat(self, session_id: str, expires_at: float) -> dict:
        return {
            "id": session_id,
            "object": "realtime.transcription_session",
            "expires_at": int(expires_at),
            "modalities": ["text"],
            "input_audio_format": self.format,
            "input_audio_transcription": self._transcription_out(),
            "input_audio_noise_reduction": self.noise_reduction,
            "turn_detection": self.turn_detection,
            "include": self.include,
            "client_secret": None,
        }


# items: one per utterance ------------------------------------------------------------------------
@dataclass
class _Item:
    id: str
    start_ms: int
    end_ms: int = 0
    utterance_id: str | None = None
    committed: bool = False
    hypothesis: str = ""
    sent: str = ""


class RealtimeConsumer(VoiceConsumer):
    """The OpenAI-Realtime transcription dialect on a session's runtime (module docstring)."""

    # connect ------------------------------------------------------------------------------------
    async def connect(self):
        """The bearer key is the session token; it names the session. Refused at the
        handshake (401, 404, 503 in OpenAI's error shape) when it does not do."""
        self._open_state()
        self.subprotocol = None
        headers = dict(self.scope.get("headers") or ())
        offered = list(self.scope.get("subprotocols") or ())
        token = bearer_token(headers.get(b"authorization", b"").decode("latin1"))
        if token is None:
            keyed = [p for p in offered if p.startswith(KEY_SUBPROTOCOL)]
            if keyed:
                token = keyed[0][len(KEY_SUBPROTOCOL) :]
                self.subprotocol = "realtime" if "realtime" in offered else None
        session_id = session_token_subject(token)
        if session_id is None:
            await self._deny(401, "invalid_api_key", "Incorrect API key provided.")
            return
        try:
            record = await services.asession_connect(session_id=session_id, token="", holder=True)
        except services.ConnectRefused:
            await self._deny(404, "session_not_found", "The session has ended or does not exist.")
            return
        except KVUnavailable:
            await self._deny(503, "state_unavailable", "Try again shortly.")
            return
        beta_header = headers.get(b"openai-beta", b"").decode("latin1")
        self.beta = "realtime=v1" in beta_header or BETA_SUBPROTOCOL in offered
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        self.intent = (query.get("intent") or [""])[0]
        self.config = TranscriptionConfig()
        self.openai_session_id = "sess_" + uuid.UUID(session_id).hex
        self.audio_bytes = 0
        # Where in the audio each utterance began and ended, seen as the audio is fed (the
        # runtime's events come later, when the client may have sent much more audio).
        self.utterance_now: str | None = None
        self.starts: deque[tuple[str, int]] = deque(maxlen=MAX_ITEMS)
        self.ends: dict[str, int] = {}
        self.client_commits: set[str] = set()
        self.cleared: set[str] = set()
        self.items: deque[_Item] = deque()  # committed or open, awaiting their transcript
        self.open_item: _Item | None = None
        self.last_committed: str | None = None
        self.client_event_id: str | None = None
        await self._attach(session_id, record)

    async def accept(self, subprotocol=None, headers=None):
        await super().accept(subprotocol or self.subprotocol, headers)

    async def _deny(self, status: int, code: str, message: str) -> None:
        """Refuse the handshake with an HTTP status and OpenAI's error body, where the server
        can (the ASGI ``websocket.http.response`` extension: uvicorn); else its 403."""
        logger.info("realtime_refused", status=status, code=code)
        # counted as /ws/voice counts the same refusals (its close codes)
        metrics.SOCKET_CLOSES.labels(code=str(DENIAL_CLOSE_CODES[status])).inc()
        if "websocket.http.response" not in (self.scope.get("extensions") or {}):
            await self.close()
            return
        kind = "invalid_request_error" if status < 500 else "server_error"
        body = json.dumps(
            {"error": {"type": kind, "code": code, "message": message, "param": None}}
        ).encode()
        await self.base_send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await self.base_send({"type": "websocket.http.response.body", "body": body})

    async def _send_ready(self) -> None:
        """``session.created`` (beta transcription: ``transcription_session.created``)."""
        self.runtime.configure_audio(*self.config.runtime_format())
        self._apply_turn_detection(self.config)
        kind = (
            "transcription_session" if self.beta and self.intent == "transcription" else "session"
        )
        await self._own({"type": f"{kind}.created", "session": self._render(flat=self.beta)})

    def _render(self, *, flat: bool) -> dict:
        render = self.config.render_flat if flat else self.config.render_ga
        return render(self.openai_session_id, self.runtime.expires_at)

    def _apply_turn_detection(self, config: TranscriptionConfig) -> None:
        """Server VAD's timings, or manual turns, on the runtime, at once; ``config`` gets the
        values as applied. Raises ConfigError (and changes nothing) for values the runtime
        refuses."""
        try:
            applied = self.runtime.set_turn_detection(config.runtime_turn_detection())
        except TurnDetectionError as exc:
            found = re.search(r"turn_detection\.(\w+)", str(exc))
            param = config.turn_detection_at + (f".{found.group(1)}" if found else "")
            raise ConfigError(f"Invalid value for '{param}': {exc}", param) from None
        if config.turn_detection is not None:
            config.turn_detection = {
                "type": "server_vad",
                **{
                    k: applied[k] for k in ("threshold", "prefix_padding_ms", "silence_duration_ms")
                },
            }

    # frames from the client ---------------------------------------------------------------------
    # OpenAI's events are JSON text named by "type"; audio comes in appends, never binary.
    RATE_FREE_KIND = "input_audio_buffer.append"

    async def _binary(self, data: bytes) -> None:
        if await self._message_allowed():
            await self._error(
                "binary_not_supported",
                "Send audio as input_audio_buffer.append events (base64 in a text frame)",
            )

    def _noted(self, message) -> None:
        """The client's ``event_id``, which OpenAI's errors quote back."""
        event_id = message.get("event_id") if isinstance(message, dict) else None
        self.client_event_id = event_id[:256] if isinstance(event_id, str) else None

    async def _handler_for(self, message, kind):
        if message is None:
            await self._error("invalid_json", "The event is not valid JSON")
            return None
        if not isinstance(message, dict):
            await self._error("invalid_type", "An event must be a JSON object", param=None)
            return None
        handler = self.MESSAGE_HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            await self._error(
                "invalid_value",
                f"Unsupported event type: this server speaks {', '.join(self.MESSAGE_HANDLERS)}",
                param="type",
            )
        return handler

    async def on_session_update(self, message: dict) -> None:
        """``session.update`` (GA or beta shape) and ``transcription_session.update``."""
        kind = message["type"]
        session = message.get("session")
        if not isinstance(session, dict):
            await self._error(
                "missing_required_parameter", "Missing required parameter: 'session'", "session"
            )
            return
        flat = kind == "transcription_session.update" or (
            "type" not in session
            and "audio" not in session
            and (self.beta or any(k.startswith("input_audio_") for k in session))
        )
        config = TranscriptionConfig(**vars(self.config))
        try:
            config.read_flat(session) if flat else config.read_ga(session)
        except ConfigError as exc:
            await self._error(exc.code, exc.message, param=exc.param)
            return
        new_format = config.format != self.config.format
        if new_format and self.runtime.audio_started:
            await self._error(
                "invalid_value",
                "The input audio format cannot change once audio has been sent",
                param="session.input_audio_format" if flat else "session.audio.input.format",
            )
            return
        try:
            self._apply_turn_detection(config)
        except ConfigError as exc:
            await self._error(exc.code, exc.message, param=exc.param)
            return
        if config.transcription_changed:
            try:
                self.runtime.set_transcription(**config.runtime_transcription())
            except TranscriptionError as exc:
                self._apply_turn_detection(self.config)  # as it was: nothing changes
                param = config.transcription_at
                param += ".keywords" if "hint" in str(exc) else ".language"
                await self._error("invalid_value", f"Invalid value for '{param}': {exc}", param)
                return
            config.transcription_changed = False
        if new_format:
            self.runtime.configure_audio(*config.runtime_format())  # keeps the turn detection
        self.config = config
        await self._own({"type": kind + "d", "session": self._render(flat=flat)})

    async def on_append(self, message: dict) -> None:
        """The hot path: base64 audio to the runtime, in memory."""
        data = message.get("audio")
        if not isinstance(data, str):
            if await self._message_allowed():
                await self._error(
                    "missing_required_parameter", "Missing required parameter: 'audio'", "audio"
                )
            return
        try:
            chunk = binascii.a2b_base64(data, strict_mode=True)
        except (binascii.Error, ValueError):
            if await self._message_allowed():
                await self._error("invalid_value", "'audio' is not valid base64", "audio")
            return
        if not chunk:
            return
        self.audio_bytes += len(chunk)
        if self.config.format == "g711_alaw":
            chunk = ALAW_TO_PCM[np.frombuffer(chunk, dtype=np.uint8)].tobytes()
        await self.runtime.audio(chunk)
        if self.runtime.utterance_id != self.utterance_now:
            self._utterance_moved()

    def _utterance_moved(self) -> None:
        """An utterance began or ended in the audio just fed: note where (in ms of audio)."""
        now, ms = self.runtime.utterance_id, self._ms()
        if self.utterance_now is not None:
            self.ends[self.utterance_now] = ms
            while len(self.ends) > MAX_ITEMS:
                self.ends.pop(next(iter(self.ends)))
        if now is not None:
            pad = (
                self.config.turn_detection["prefix_padding_ms"] if self._vad else DEFAULT_PREFIX_MS
            )
            self.starts.append((now, max(0, ms - pad)))
        self.utterance_now = now

    async def on_commit(self, message: dict) -> None:
        utterance_id = self.runtime.utterance_id
        if not self.runtime.commit():
            await self._error(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: no speech in the buffer",
                param=None,
            )
            return
        self.client_commits.add(utterance_id)
        self._utterance_moved()

    async def on_clear(self, message: dict) -> None:
        """Drop the utterance in progress; its item (open now, or when its speech_started is
        still on the way) never gets a transcript."""
        dropped = self.runtime.utterance_id
        if await self.runtime.discard():
            self._utterance_moved()
            if self.open_item is not None and self.open_item.utterance_id == dropped:
                with contextlib.suppress(ValueError):
                    self.items.remove(self.open_item)
                self.open_item = None
            else:
                self.cleared.add(dropped)
        await self._own({"type": "input_audio_buffer.cleared"})

    MESSAGE_HANDLERS = {
        "session.update": on_session_update,
        "transcription_session.update": on_session_update,
        "input_audio_buffer.append": on_append,
        "input_audio_buffer.commit": on_commit,
        "input_audio_buffer.clear": on_clear,
    }

    # the session's events, translated -----------------------------------------------------------
    async def session_event(self, message: dict) -> None:
        event = message["event"]
        if self.closing:
            return
        kind = event["type"]
        if kind == "speech.started":
            await self._speech_started(event)
        elif kind == "speech.stopped":
            await self._speech_stopped(event)
        elif kind == "transcript.partial":
            await self._partial(event)
        elif kind == "transcript.final":
            await self._final(event)
        elif kind in ("task.created", "task.updated"):
            self.runtime.track_task(event["task"], from_store=False)
        elif kind == "session.closed":
            await self._close(1000, event.get("reason", "closed"))
        elif kind == "realtime.out":
            await self._send_now(event["event"])
        elif kind == "realtime.failed":
            await self._recognition_failed(event["event"]["code"], event["event"]["message"])

    def _ms(self) -> int:
        return self.audio_bytes // BYTES_PER_MS[self.config.format]

    @property
    def _vad(self) -> bool:
        return self.config.turn_detection is not None

    async def _speech_started(self, event: dict) -> None:
        # The runtime's speech.started events come in the order the utterances began.
        utterance_id, start_ms = self.starts.popleft() if self.starts else (None, self._ms())
        utterance_id = event.get("utterance_id") or utterance_id
        if utterance_id in self.cleared:
            self.cleared.discard(utterance_id)
            return  # cleared before its start was told: it never becomes an item
        item = _Item(id=new_id("item"), start_ms=start_ms, utterance_id=utterance_id)
        self.open_item = item
        self.items.append(item)
        while len(self.items) > MAX_ITEMS:
            self.items.popleft()
        if self._vad:
            await self._send_now(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": item.start_ms,
                    "item_id": item.id,
                }
            )

    async def _speech_stopped(self, event: dict) -> None:
        item = self._item_for(event.get("utterance_id")) or self.open_item
        if item is None or item.committed:
            return
        if item is self.open_item:
            self.open_item = None
        item.committed = True
        item.end_ms = self.ends.pop(item.utterance_id, None) or self._ms()
        by_client = item.utterance_id in self.client_commits
        self.client_commits.discard(item.utterance_id)
        if self._vad and not by_client:
            await self._send_now(
                {
                    "type": "input_audio_buffer.speech_stopped",
                    "audio_end_ms": item.end_ms,
                    "item_id": item.id,
                }
            )
        await self._send_now(
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": self.last_committed,
                "item_id": item.id,
            }
        )
        await self._send_now(
            {
                "type": "conversation.item.created" if self.beta else "conversation.item.added",
                "previous_item_id": self.last_committed,
                "item": {
                    "id": item.id,
                    "object": "realtime.item",
                    "type": "message",
                    "status": "completed",
                    "role": "user",
                    "content": [{"type": "input_audio", "transcript": None}],
                },
            }
        )
        self.last_committed = item.id

    def _item_for(self, utterance_id: str | None) -> _Item | None:
        if utterance_id is None:
            return None
        for item in self.items:
            if item.utterance_id == utterance_id:
                return item
        return None

    def _claim(self, utterance_id: str) -> _Item | None:
        """The item an utterance's transcript belongs to.

        Partials come only while their utterance is open, so the first partial binds the open
        item. A final with no partial before it takes the oldest committed item not yet bound:
        the runtime reports utterances in the order they end.
        """
        item = self._item_for(utterance_id)
        if item is not None:
            return item
        candidates = [i for i in self.items if i.utterance_id is None and i.committed]
        if not candidates and self.open_item is not None and self.open_item.utterance_id is None:
            candidates = [self.open_item]
        if not candidates:
            return None
        candidates[0].utterance_id = utterance_id
        return candidates[0]

    async def _partial(self, event: dict) -> None:
        item = self._item_for(event["utterance_id"])
        if item is None and self.open_item is not None and self.open_item.utterance_id is None:
            item = self.open_item
            item.utterance_id = event["utterance_id"]
        if item is None:
            return
        target = stable_text(item.hypothesis, event["text"])
        item.hypothesis = event["text"]
        await self._delta(item, delta_for(item.sent, target))

    async def _delta(self, item: _Item, delta: str) -> None:
        if not delta or self.config.transcription is None:
            return
        item.sent += delta
        await self._send_now(
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": item.id,
                "content_index": 0,
                "delta": delta,
            }
        )

    async def _final(self, event: dict) -> None:
        item = self._claim(event["utterance_id"])
        if item is None:
            return
        await self._delta(item, delta_for(item.sent, event["text"]))
        await self._completed(item, event["text"])

    async def _completed(self, item: _Item, transcript: str) -> None:
        with contextlib.suppress(ValueError):
            self.items.remove(item)
        if self.config.transcription is None:
            return
        seconds = max(0, (item.end_ms or self._ms()) - item.start_ms) / 1000
        await self._send_now(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item.id,
                "content_index": 0,
                "transcript": transcript,
                "usage": {"type": "duration", "seconds": round(seconds, 3)},
            }
        )

    async def _recognition_failed(self, code: str, message: str) -> None:
        """A failure the runtime reported (no item id): the oldest committed item's."""
        committed = [i for i in self.items if i.committed]
        if not committed:
            return
        item = committed[0]
        if code == NOTHING_HEARD:
            await self._completed(item, "")
            return
        with contextlib.suppress(ValueError):
            self.items.remove(item)
        await self._send_now(
            {
                "type": "conversation.item.input_audio_transcription.failed",
                "item_id": item.id,
                "content_index": 0,
                "error": {
                    "type": "transcription_error",
                    "code": code,
                    "message": message,
                    "param": None,
                },
            }
        )

    # sending --------------------------------------------------------------------------------
    def _stamp(self, event: dict) -> dict:
        return {"type": event["type"], "event_id": new_id("event"), **event}

    async def _send_now(self, event: dict) -> None:
        await self.send(text_data=json.dumps(self._stamp(event)))

    async def _own(self, event: dict, kind: str = "realtime.out") -> None:
        """An event of this socket's own, queued behind the session's events already on their
        way to it (this socket's channel), so that the client sees them in order."""
        message = {"type": "session.event", "event": {"type": kind, "event": event}}
        try:
            await self.channel_layer.send(self.channel_name, message)
        except ChannelFull:
            await self._send_now(event)

    async def _send_own(self, event: dict) -> None:
        """What the shared parts of the socket send as ``/ws/voice`` events (a rate-limit
        error): in this dialect's shape; anything else has no OpenAI counterpart."""
        if event.get("type") == "error":
            code = event.get("code", "error")
            kind = "rate_limit_error" if code == "rate_limited" else "invalid_request_error"
            await self._fail_event(kind, code, event.get("message", ""))

    async def _fail_event(self, kind: str, code: str, message: str, param=None) -> None:
        await self._own(
            {
                "type": "error",
                "error": {
                    "type": kind,
                    "code": code,
                    "message": message,
                    "param": param,
                    "event_id": self.client_event_id,
                },
            }
        )

    async def _error(
        self, code: str, message: str, param: str | None = None, *, counts: bool = True
    ) -> None:
        """A recoverable error in OpenAI's shape; the socket stays open (until too many in a
        row: 4400). The runtime's failed recognitions become the item's own events."""
        if code == NOTHING_HEARD or code in RECOGNITION_FAILURES:
            await self._own({"code": code, "message": message}, kind="realtime.failed")
            return
        if counts:
            self.erred = True
            self.errors_in_row += 1
            if self.errors_in_row > settings.PROTOCOL_ERROR_BUDGET:
                await self._close(4400, "too many protocol errors")
                return
        kind = "invalid_request_error" if counts else "server_error"
        await self._fail_event(kind, code, message, param)

    async def _close(self, code: int, reason: str) -> None:
        """Say why in an ``error`` event (unless 1000), then close with the code."""
        if self.closing:
            return
        self.closing = True
        logger.info("socket_closing", session_id=short(self.session_id), code=code, reason=reason)
        metrics.SOCKET_CLOSES.labels(code=str(code)).inc()
        if code != 1000:
            kind = "server_error" if code == 1011 else "invalid_request_error"
            with contextlib.suppress(Exception):
                await self._send_now(
                    {
                        "type": "error",
                        "error": {
                            "type": kind,
                            "code": CLOSE_NAMES.get(code, "closed"),
                            "message": reason,
                            "param": None,
                            "event_id": None,
                        },
                    }
                )
        await self.close(code=code, reason=reason)

    async def _fail(self, send, reason: str, *, stamp: bool) -> None:
        """1011 (see VoiceConsumer.__call__), said in this dialect's shape; never raises."""
        metrics.SOCKET_CLOSES.labels(code="1011").inc()
        event = self._stamp(
            {
                "type": "error",
                "error": {
                    "type": "server_error",
                    "code": "internal_error",
                    "message": reason,
                    "param": None,
                    "event_id": None,
                },
            }
        )
        with contextlib.suppress(Exception):
            if not self._accepted:
                await send({"type": "websocket.close"})  # at the handshake: the server's 403
                return
            await send({"type": "websocket.send", "text": json.dumps(event)})
            await send({"type": "websocket.close", "code": 1011})
