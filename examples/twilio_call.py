"""Play Twilio's part of a phone call against a running server: the signed webhook, then the
media stream with a spoken WAV, printing what the service sends back.

    TWILIO_AUTH_TOKEN=example-token make serve            # in one terminal
    .venv/bin/python examples/twilio_call.py --auth-token example-token \\
        tests/fixtures/audio/remind_buy_milk_tomorrow.wav  # in another

It does what Twilio does (docs/protocol.md, "Twilio Media Streams"):

1. POSTs the incoming-call form (``CallSid``, ``From``, ``To``, ...) to
   ``/api/v1/telephony/twilio/voice``, signed in ``X-Twilio-Signature`` with the auth token
   by Twilio's algorithm (the URL, then each field's name and value sorted by name,
   HMAC-SHA1, base64);
2. reads the TwiML answer's ``<Connect><Stream url=...>`` and its ``token`` ``<Parameter>``;
3. opens that socket and sends ``connected``, ``start`` (the token in ``customParameters``),
   the WAV as ``media`` messages of 20 ms of 8 kHz mu-law at real time, then silence as a
   quiet caller would, echoing each ``mark`` back as Twilio does once it has played the audio
   before it, and finally ``stop``.

The last line it prints is a JSON summary: the frames of reply audio received, the marks and
the clears. Only numpy, soxr and websockets are needed (all in requirements.txt).
"""

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import sys
import time
import urllib.error
import urllib.request
import wave
import xml.etree.ElementTree as ET
from urllib.parse import urlencode

import numpy as np
import soxr
import websockets

ACCOUNT_SID = "AC" + "0" * 32
CALL_SID = "CA" + "1" * 32
STREAM_SID = "MZ" + "2" * 32
FRAME = 160  # 20 ms of 8 kHz mu-law


def twilio_signature(auth_token: str, url: str, form: dict) -> str:
    """Twilio's webhook signature (its docs, "Webhooks security")."""
    text = url + "".join(name + form[name] for name in sorted(form))
    mac = hmac.new(auth_token.encode(), text.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def mulaw_8k(path: str) -> bytes:
    """A 16-bit PCM WAV as a phone line carries it: mono, 8 kHz, G.711 mu-law."""
    with wave.open(path) as w:
        if w.getsampwidth() != 2:
            sys.exit("the WAV must be 16-bit PCM")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        pcm = pcm.reshape(-1, w.getnchannels()).mean(axis=1)
        rate = w.getframerate()
    x = soxr.resample(pcm, rate, 8000).astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 132
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def place_call(base: str, auth_token: str, to: str) -> tuple[str, str]:
    """The webhook request; returns the stream's URL and its connect token."""
    url = base.rstrip("/") + "/api/v1/telephony/twilio/voice"
    form = {
        "AccountSid": ACCOUNT_SID,
        "CallSid": CALL_SID,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "From": "+15557654321",
        "To": to,
    }
    request = urllib.request.Request(
        url,
        data=urlencode(form).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature(auth_token, url, form),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            twiml = response.read()
    except urllib.error.HTTPError as err:
        sys.exit(f"webhook: {err.code} {err.read().decode(errors='replace')}")
    except urllib.error.URLError as err:
        sys.exit(f"webhook: {url}: {err.reason}")
    print("webhook:", twiml.decode())
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    if stream is None:
        sys.exit("the service did not answer the call (a full line answers <Reject/>)")
    token = next(p.get("value") for p in stream.findall("Parameter") if p.get("name") == "token")
    return stream.get("url"), token


async def stream_call(url: str, token: str, audio: bytes, wait: float) -> dict:
    summary = {"media_frames": 0, "marks": [], "clears": 0}
    sequence = 0

    def numbered(event: str, **fields) -> str:
        nonlocal sequence
        sequence += 1
        return json.dumps(
            {"event": event, "sequenceNumber": str(sequence), "streamSid": STREAM_SID, **fields}
        )

    async with websockets.connect(url) as ws:

        async def listen():
            async for raw in ws:
                message = json.loads(raw)
                kind = message.get("event") or message.get("type")
                if kind == "media":
                    summary["media_frames"] += 1
                    if summary["media_frames"] == 1:
                        print("reply audio started")
                elif kind == "mark":
                    summary["marks"].append(message["mark"]["name"])
                    print("mark:", message["mark"]["name"])
                    await ws.send(numbered("mark", mark=message["mark"]))  # played
                elif kind == "clear":
                    summary["clears"] += 1
                    print("clear")
                else:
                    print("service:", raw)

        listener = asyncio.create_task(listen())
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "accountSid": ACCOUNT_SID,
            "streamSid": STREAM_SID,
            "callSid": CALL_SID,
            "tracks": ["inbound"],
            "customParameters": {"token": token},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        await ws.send(numbered("start", start=start))
        silence = b"\xff" * FRAME
        began = time.monotonic()
        chunk = 0
        frames = [audio[i : i + FRAME] for i in range(0, len(audio), FRAME)]
        quiet_until = None
        while True:
            if chunk < len(frames):
                payload = frames[chunk]
            else:
                quiet_until = quiet_until or time.monotonic() + wait
                if summary["marks"] or time.monotonic() > quiet_until or listener.done():
                    break
                payload = silence
            media = {
                "track": "inbound",
                "chunk": str(chunk + 1),
                "timestamp": str(chunk * 20),
                "payload": base64.b64encode(payload).decode(),
            }
            await ws.send(numbered("media", media=media))
            chunk += 1
            await asyncio.sleep(max(0.0, began + chunk * 0.02 - time.monotonic()))
        await ws.send(numbered("stop", stop={"accountSid": ACCOUNT_SID, "callSid": CALL_SID}))
        with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
            await asyncio.wait_for(listener, 5)
    return summary


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wav", help="a 16-bit PCM WAV with a spoken command")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
    parser.add_argument("--auth-token", required=True, help="the server's TWILIO_AUTH_TOKEN")
    parser.add_argument("--to", default="+15550001111", help="the called number")
    parser.add_argument("--wait", type=float, default=20, help="seconds to wait for a reply")
    args = parser.parse_args(argv)
    url, token = place_call(args.url, args.auth_token, args.to)
    summary = asyncio.run(stream_call(url, token, mulaw_8k(args.wav), args.wait))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
