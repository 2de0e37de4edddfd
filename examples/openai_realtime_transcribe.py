"""Transcribe a WAV file with the official ``openai`` SDK, against this service, offline.

The client code is what you would write for OpenAI's Realtime transcription; only
``base_url`` and ``api_key`` differ: the service's URL and a session token.

    make serve                                   # in one terminal
    .venv/bin/pip install -r requirements-dev.txt  # the openai package (a test dependency)
    .venv/bin/python examples/openai_realtime_transcribe.py tests/fixtures/audio/confirm.wav

It creates a transcription-only session (``"intents": false``) over REST, streams the WAV at
real time as 24 kHz pcm16 (``input_audio_buffer.append``), and prints the transcript as it
grows (``...delta``) and each finished one (``...completed``). ``--manual`` turns server VAD
off: the audio is then committed by the client at the end, as push-to-talk would.
"""

import argparse
import asyncio
import base64
import hashlib
import json
import sys
import urllib.request
import wave

import numpy as np
import soxr
from openai import AsyncOpenAI

CHUNK_MS = 100


def create_session(server: str, namespace: str) -> str:
    """A new session that only transcribes; returns its token (the API key)."""
    key_hash = "sha256:" + hashlib.sha256(namespace.encode()).hexdigest()
    body = {"namespace_id": namespace, "key_hash": key_hash, "intents": False}
    request = urllib.request.Request(
        server.rstrip("/") + "/api/v1/sessions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["session_token"]


def pcm16_24k(path: str) -> bytes:
    """Any 16-bit PCM WAV as OpenAI's pcm16: mono, 24 kHz, little-endian; plus 1 s of silence
    so that server VAD hears the end of speech."""
    with wave.open(path) as w:
        if w.getsampwidth() != 2:
            sys.exit(f"{path}: only 16-bit PCM WAV files")
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        samples = samples.reshape(-1, w.getnchannels()).mean(axis=1).astype("<i2")
        rate = w.getframerate()
    if rate != 24000:
        samples = soxr.resample(samples, rate, 24000).astype("<i2")
    return np.concatenate([samples, np.zeros(24000, dtype="<i2")]).tobytes()


async def transcribe(server: str, token: str, wav: str, manual: bool) -> None:
    client = AsyncOpenAI(api_key=token, base_url=server.rstrip("/") + "/v1")
    async with client.realtime.connect(model="gpt-4o-transcribe") as conn:
        await conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "gpt-4o-transcribe", "language": "en"},
                        "turn_detection": None
                        if manual
                        else {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            }
        )

        async def send_audio() -> None:
            audio = pcm16_24k(wav)
            step = 24000 * 2 * CHUNK_MS // 1000
            for offset in range(0, len(audio), step):
                chunk = base64.b64encode(audio[offset : offset + step]).decode()
                await conn.input_audio_buffer.append(audio=chunk)
                await asyncio.sleep(CHUNK_MS / 1000)  # real time, as a microphone would
            if manual:
                await conn.input_audio_buffer.commit()

        sender = asyncio.create_task(send_audio())
        pending: set[str] = set()  # committed items still to be transcribed
        while True:
            # Once all audio is sent and every item has its transcript, stop after a quiet 2 s.
            quiet = sender.done() and not pending
            try:
                event = await asyncio.wait_for(conn.recv(), 2 if quiet else 60)
            except TimeoutError:
                break
            if event.type == "input_audio_buffer.committed":
                pending.add(event.item_id)
            elif event.type == "conversation.item.input_audio_transcription.delta":
                print(event.delta, end="", flush=True)
            elif event.type == "conversation.item.input_audio_transcription.completed":
                pending.discard(event.item_id)
                print(f"\n[completed] {event.transcript}", flush=True)
            elif event.type == "error":
                print(f"[error] {event.error.code}: {event.error.message}", file=sys.stderr)
        await sender


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wav", help="a 16-bit PCM WAV file")
    parser.add_argument("--server", default="http://127.0.0.1:8000")
    parser.add_argument("--token", help="an existing session token (default: create a session)")
    parser.add_argument("--namespace", default="openai-example")
    parser.add_argument("--manual", action="store_true", help="VAD off: commit at the end")
    args = parser.parse_args()
    token = args.token or create_session(args.server, args.namespace)
    asyncio.run(transcribe(args.server, token, args.wav, args.manual))


if __name__ == "__main__":
    main()
