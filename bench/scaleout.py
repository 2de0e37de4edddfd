"""Throughput with 1, 2 and 4 uvicorn workers sharing one Redis.

    python -m bench.scaleout [--seconds 5]

Each worker gets its own wrk (32 connections, GET of one session), all at once; the table
sums them. On this 2-core machine the workers and the load generators share the cores, so the
figure shows how the design scales until the CPU runs out, not beyond.
"""

import contextlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from bench.common import create_session, save, serve, table
from bench.rest import wrk

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")
ENV = {"REDIS_URL": REDIS_URL, "CACHE_KEY_PREFIX": "vs-scale", "CONNECT_WINDOW_SECONDS": "3600"}


def main(argv: list[str]) -> None:
    seconds = int(argv[argv.index("--seconds") + 1]) if "--seconds" in argv else 5
    rows, base = [], None
    for workers in (1, 2, 4):
        with contextlib.ExitStack() as stack:
            hosts = [stack.enter_context(serve("uvicorn", **ENV))[0] for _ in range(workers)]
            session = create_session(hosts[0], "scale")
            urls = [f"http://{h}/api/v1/sessions/{session['id']}" for h in hosts]
            token = session["session_token"]
            with ThreadPoolExecutor(workers) as pool:
                rates = list(pool.map(wrk, urls, [seconds] * workers, [None] * workers,
                                      [token] * workers))  # fmt: skip
        total = sum(rate for rate, _cpu in rates)
        base = base or total
        rows.append([workers, total, total / base])
    print(table("GET requests/s, uvicorn workers on one Redis",
                ["workers", "requests/s", "vs 1 worker"], rows))  # fmt: skip
    print(f"\nsaved {save('scaleout', {'rows': rows})}")


if __name__ == "__main__":
    main(sys.argv[1:])
