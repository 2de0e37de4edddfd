"""Redis memory and keys per session, measured (for docs/scaling.md).

    python -m bench.redis_memory [--sessions 2000]

Creates sessions through the services on a Redis database of its own, in two shapes: just
created, and used (connected, 10 events, 2 messages, one completed task). Prints bytes and
keys per session from ``INFO memory`` and ``DBSIZE`` deltas.
"""

import os
import sys

from bench.common import BENCH_ENV, save, table

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")


def main(argv: list[str]) -> None:
    n = int(argv[argv.index("--sessions") + 1]) if "--sessions" in argv else 2000
    os.environ.update({**BENCH_ENV, "REDIS_URL": REDIS_URL, "CACHE_KEY_PREFIX": "vs-mem",
                       "CONNECT_WINDOW_SECONDS": "3600", "TASK_RUNNER": "inprocess"})  # fmt: skip
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceproject.settings")
    import django

    django.setup()
    import redis

    from sessions_app import services
    from sessions_app.tokens import token_issue
    from tasks_app.services import task_create, task_run

    client = redis.Redis.from_url(REDIS_URL)
    rows = []
    for shape in ("created", "used"):
        client.flushdb()
        before_mem, before_keys = client.info("memory")["used_memory"], client.dbsize()
        for i in range(n):
            record = services.session_create(
                namespace_id=f"mem-{i}", key_hash="sha256:" + "0" * 64,
                device_type="web", client_version="1.0",
            )  # fmt: skip
            if shape == "used":
                sid = record["id"]
                services.session_connect(session_id=sid, token=token_issue(session_id=sid))
                for k in range(10):
                    services.session_emit(
                        session_id=sid, event={"type": "transcript.final", "text": f"utterance {k}"}
                    )
                services.session_message_add(session_id=sid, role="user", text="add eggs")
                services.session_message_add(session_id=sid, role="assistant", text="Added.")
                task = task_create(session_id=sid, task_type="note", payload={"text": "eggs"})
                task_run(task_id=task["id"])
        mem = client.info("memory")["used_memory"] - before_mem
        keys = client.dbsize() - before_keys
        rows.append([shape, n, mem / n, keys / n])
    client.flushdb()
    print(table("Redis per session", ["shape", "sessions", "bytes/session", "keys/session"], rows))
    print(f"\nsaved {save('redis-memory', {'rows': rows})}")


if __name__ == "__main__":
    main(sys.argv[1:])
