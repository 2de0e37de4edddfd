"""``python manage.py voice_client [WAV] [--text "..."]``: a session from the command line.

Creates a session over REST, connects to its socket, streams a WAV file at real time (or sends
text), prints every event as it arrives, then closes the session.
"""

import asyncio
import json
import time
import urllib.request
import wave

import numpy as np
import soxr
import websockets
from django.core.management.base import BaseCommand, CommandError

FRAME_MS = 20
SUPPORTED_RATES = (8000, 16000, 24000, 48000)
KEY_HASH = "sha256:" + "0" * 64


async def send_paced(ws, audio: bytes, *, frame_bytes: int, seconds_per_frame: float) -> float:
    """Send ``audio`` in frames at a steady pace; returns when the last frame left."""
    start = time.monotonic()
    for i, offset in enumerate(range(0, len(audio), frame_bytes)):
        await ws.send(audio[offset : offset + frame_bytes])
        delay = start + (i + 1) * seconds_per_frame - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    return time.monotonic()


def read_wav(path: str) -> tuple[bytes, int]:
    """Mono PCM16 bytes and their rate (stereo is mixed down, odd rates resampled to 16 kHz)."""
    try:
        with wave.open(path, "rb") as w:
            if w.getsampwidth() != 2:
                raise CommandError(f"{path}: only 16-bit PCM WAV files are supported")
            rate, channels = w.getframerate(), w.getnchannels()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (OSError, wave.Error) as exc:
        raise CommandError(f"{path}: {exc}") from exc
    if channels > 1:
        pcm = pcm.reshape(-1, channels).mean(axis=1).astype(np.int16)
    if rate not in SUPPORTED_RATES:
        pcm = soxr.resample(pcm, rate, 16000).astype(np.int16)
        rate = 16000
    return pcm.tobytes(), rate


class Command(BaseCommand):
    help = "Create a voice session, stream a WAV (or send text), print every event."

    def add_arguments(self, parser):
        parser.add_argument("wav", nargs="?", help="a 16-bit PCM WAV file to speak")
        parser.add_argument("--text", action="append", default=[], help="an utterance to type")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
        parser.add_argument("--namespace", default="voice-client")
        parser.add_argument("--fast", action="store_true", help="stream at twice real time")
        parser.add_argument(
            "--wait",
            type=float,
            default=30.0,
            help="at most this many seconds for the replies (a cold server's first recognition"
            " takes a few seconds)",
        )

    def handle(self, *args, **options):
        if not options["wav"] and not options["text"]:
            raise CommandError("give a WAV file, --text, or both")
        asyncio.run(self._run(options))

    def _print(self, event: dict) -> None:
        self.stdout.write(json.dumps(event))

    async def _run(self, options):
        session = await asyncio.to_thread(self._create, options["url"], options["namespace"])
        self.stdout.write(f"session {session['id']} ({session['status']})")
        self.speaking, self.open_turns = False, 0
        async with websockets.connect(session["websocket_url"], max_size=2**20) as ws:
            reader = asyncio.create_task(self._read(ws))
            if options["wav"]:
                pcm, rate = read_wav(options["wav"])
                await self._stream(ws, pcm, rate, fast=options["fast"])
            for text in options["text"]:
                self.open_turns += 1
                await ws.send(json.dumps({"type": "text", "text": text}))
                await asyncio.sleep(0.5)
            try:
                await asyncio.wait_for(self._answered(), options["wait"])
            except TimeoutError:
                self.stdout.write(f"no reply within {options['wait']:g} s")
            await ws.send(json.dumps({"type": "session.close"}))
            try:
                await asyncio.wait_for(reader, 5)
            except TimeoutError:
                reader.cancel()

    async def _answered(self) -> None:
        """Until every turn (an utterance heard, a text sent) has its reply or error."""
        await asyncio.sleep(0.5)
        while self.speaking or self.open_turns > 0:
            await asyncio.sleep(0.1)

    async def _read(self, ws):
        try:
            async for raw in ws:
                event = json.loads(raw)
                if event["type"] in ("speech.started", "speech.stopped"):
                    self.speaking = event["type"] == "speech.started"
                    self.open_turns += event["type"] == "speech.stopped"
                elif event["type"] in ("response", "error"):
                    self.open_turns = max(0, self.open_turns - 1)
                self._print(event)
        except websockets.ConnectionClosed as closed:
            self.stdout.write(f"closed {closed.rcvd.code if closed.rcvd else '?'}")

    async def _stream(self, ws, pcm: bytes, rate: int, *, fast: bool) -> None:
        if rate != 16000:
            update = {"encoding": "pcm_s16le", "sample_rate": rate}
            await ws.send(json.dumps({"type": "session.update", "audio": update}))
        step = rate * 2 * FRAME_MS // 1000
        silence = b"\x00" * (rate * 2)  # 1 s after the speech, so VAD hears it end
        pace = FRAME_MS / 1000 / (2 if fast else 1)
        await send_paced(ws, pcm + silence, frame_bytes=step, seconds_per_frame=pace)
        if self.speaking:  # VAD has not heard the end: end the utterance now
            await ws.send(json.dumps({"type": "audio.commit"}))

    @staticmethod
    def _create(url: str, namespace: str) -> dict:
        body = json.dumps({"namespace_id": namespace, "key_hash": KEY_HASH}).encode()
        request = urllib.request.Request(
            url.rstrip("/") + "/api/v1/sessions",
            data=body,
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except OSError as exc:
            raise CommandError(f"cannot create a session at {url}: {exc}") from exc
