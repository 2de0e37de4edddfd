"""Settings for the test suite: the real settings, with a test secret and a fast socket tick."""

import os

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("SOCKET_TICK_SECONDS", "0.05")
# No scheduler thread in the test process: a test that wants due tasks run calls
# tasks_app.scheduler.run_due() itself (deterministic, and no background store traffic to
# disturb round-trip counts). The live servers run theirs.
os.environ.setdefault("SCHEDULER_TICK_SECONDS", "0")
os.environ.setdefault("SESSION_CREATE_RATE", "100000/min")
os.environ.setdefault("WORKER_HEARTBEAT_SECONDS", "0")  # the ops tests beat by hand
os.environ.pop("REDIS_URL", None)  # the suite chooses back ends per test

from voiceproject.settings import *  # noqa: F403
