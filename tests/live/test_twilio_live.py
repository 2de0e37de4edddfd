"""A phone call on a real server: ``examples/twilio_call.py`` plays Twilio against uvicorn.

The server runs as deployed (``production_env``) with a Twilio auth token; the example signs
the webhook, streams a spoken WAV as Twilio's media messages at real time, and reports what
came back. The reply must come back as audio followed by its mark.
"""

import json
import subprocess
import sys
import urllib.error
import urllib.request
from urllib.parse import urlencode

import pytest

from tests.live.servers import INHERITED, ROOT, uvicorn

pytestmark = [pytest.mark.live, pytest.mark.django_db(databases=[])]

AUTH_TOKEN = "live-twilio-auth-token"


def test_the_example_call_is_answered_heard_and_spoken_to_on_a_real_server(tmp_path):
    import os

    with uvicorn(tmp_path, TWILIO_AUTH_TOKEN=AUTH_TOKEN, TWILIO_NAMESPACES="*=phone") as srv:
        unsigned = urllib.request.Request(
            srv.http + "/api/v1/telephony/twilio/voice",
            data=urlencode({"CallSid": "CA1", "To": "+15550001111"}).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(unsigned, timeout=10)
        assert refused.value.code == 403

        env = {k: os.environ[k] for k in INHERITED if k in os.environ}
        example = subprocess.run(
            [sys.executable, "examples/twilio_call.py", "--url", srv.http, "--auth-token",
             AUTH_TOKEN, "--wait", "120", "tests/fixtures/audio/remind_buy_milk_tomorrow.wav"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
        assert example.returncode == 0, example.stderr[-2000:]
        summary = json.loads(example.stdout.strip().splitlines()[-1])
        assert summary["media_frames"] > 50, (summary, srv.log.read_text()[-2000:])
        assert len(summary["marks"]) == 1 and summary["clears"] == 0, summary
