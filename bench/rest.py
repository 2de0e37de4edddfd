"""REST throughput against the seed-style baseline, with wrk (32 connections), side by side.

    python -m bench.rest [--sizes 0,10000,100000] [--seconds 5]

For each number of sessions already stored, it measures create, get and stats requests per
second on one process each of: the baseline (FastAPI + uvicorn, a dict and a scan, as the
seed); this project on Redis (the multi-worker configuration) under daphne and under
uvicorn, preloaded through its own service; and this project under uvicorn on its embedded
local-memory store (one process, like the baseline's dict), preloaded over HTTP. The baseline
is preloaded through a route of its own. Both uvicorn servers run alike (bench.common).
Prints a table with project/baseline ratios taken in the same run. Needs Debian's ``wrk``
and ``pip install -r bench/requirements.txt``.
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from bench.common import BENCH_ENV, create_session, save, serve, table

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
PREFIX = "vs-bench"
CREATE_LUA = """
wrk.method = "POST"
local n = 0
local run = ""
function init(args)
  -- wrk seeds every thread's Lua alike: tell threads and runs apart, or namespaces repeat
  run = string.format("%d-%s", os.time(), tostring({}):sub(8))
end
request = function()
  n = n + 1
  local ns = string.format("wrk-%s-%d", run, n)
  local body = '{"namespace_id":"' .. ns .. '","key_hash":"sha256:' .. string.rep("0", 64) .. '"}'
  -- many clients behind one proxy, as in production: the create throttle keeps a short
  -- history per client, not one history of every request the load generator makes
  local client = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256,
                               math.floor(n / 256) % 256, n % 256)
  local headers = {["Content-Type"] = "application/json", ["X-Forwarded-For"] = client}
  return wrk.format(nil, "/api/v1/sessions", headers, body)
end
"""
LOCAL_ENV = {
    "CONNECT_WINDOW_SECONDS": "3600",  # preloaded sessions must outlive the run
    "NUM_PROXIES": "1",  # the throttle counts X-Forwarded-For's client (see CREATE_LUA)
}
PROJECT_ENV = {
    **LOCAL_ENV,
    "REDIS_URL": REDIS_URL,
    "CACHE_KEY_PREFIX": PREFIX,
}


def wrk(url: str, seconds: int, script: str | None = None, token: str | None = None) -> float:
    """Requests/s of ``url``; ``token`` is sent as the session's bearer token (CONTRACT 1b)."""
    cmd = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url]
    if token:
        cmd[1:1] = ["-H", f"Authorization: Bearer {token}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if script:
            lua.write(script)
            lua.flush()
            cmd[1:1] = ["-s", lua.name]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors and int(errors.group(1)) > 0:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def _flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def preload_project(n: int) -> None:
    """``n`` sessions through the project's own create service, 8 threads at a time."""
    os.environ.update({**BENCH_ENV, **PROJECT_ENV})
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceproject.settings")
    import django

    django.setup()
    from sessions_app.services import session_create

    def one(i: int) -> None:
        session_create(namespace_id=f"pre-{i}", key_hash="sha256:" + "0" * 64,
                       device_type="bench", client_version=None)  # fmt: skip

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def preload_http(host: str, start: int, n: int) -> None:
    """``n`` sessions through the API (the local-memory store lives in the server process)."""

    def one(i: int) -> None:
        client = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
        create_session(host, f"pre-{i}", headers={"X-Forwarded-For": client})

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(start, start + n)))


SERVERS = ("baseline", "daphne", "uvicorn", "uvicorn-local")


def main(argv: list[str]) -> None:
    sizes = [0, 10_000, 100_000]
    seconds = 5
    if "--sizes" in argv:
        sizes = [int(x) for x in argv[argv.index("--sizes") + 1].split(",")]
    if "--seconds" in argv:
        seconds = int(argv[argv.index("--seconds") + 1])
    _flush_redis()
    rows, results, stored = [], [], 0
    with (
        serve("baseline") as (base, _),
        serve("daphne", **PROJECT_ENV) as (daph, _),
        serve("uvicorn", **PROJECT_ENV) as (uvi, _),
        serve("uvicorn", **LOCAL_ENV) as (local, _),
    ):
        hosts = dict(zip(SERVERS, (base, daph, uvi, local), strict=True))
        for size in sizes:
            if size > stored:
                preload_project(size - stored)
                preload_http(local, stored, size - stored)
                req = urllib.request.Request(f"http://{base}/_preload?n={size - stored}",
                                             method="POST")  # fmt: skip
                urllib.request.urlopen(req, timeout=600).read()
                stored = size
            probes = {h: create_session(h, "probe") for h in hosts.values()}
            ids = {h: probe["id"] for h, probe in probes.items()}
            for endpoint in ("create", "get", "stats"):
                figures = {}
                for name, host in hosts.items():
                    path = {"create": "/api/v1/sessions", "get": f"/api/v1/sessions/{ids[host]}",
                            "stats": f"/api/v1/sessions/{ids[host]}/stats"}[endpoint]  # fmt: skip
                    figures[name] = wrk(f"http://{host}{path}", seconds,
                                        CREATE_LUA if endpoint == "create" else None,
                                        probes[host].get("session_token"))  # fmt: skip
                rows.append([size, endpoint, *(figures[n] for n in SERVERS),
                             *(figures[n] / figures["baseline"] for n in SERVERS[1:])])  # fmt: skip
                results.append({"stored": size, "endpoint": endpoint, **figures})
                print(f"  {size} {endpoint}: {json.dumps(figures)}", flush=True)
    print(table(
        "REST requests/s, one process each, wrk -t2 -c32 (baseline: dict + scan; project on "
        "Redis under daphne and uvicorn, and on local memory under uvicorn)",
        ["stored", "endpoint", *SERVERS, *(f"{n}/base" for n in SERVERS[1:])],
        rows,
    ))  # fmt: skip
    creates = {r["stored"]: r for r in results if r["endpoint"] == "create"}
    if len(creates) > 1:
        first, last = creates[min(creates)], creates[max(creates)]
        print(table(
            f"Create as the store fills ({min(creates)} to {max(creates)} sessions stored)",
            ["server", "at first", "at last", "last/first"],
            [[k, first[k], last[k], last[k] / first[k]] for k in SERVERS],
        ))  # fmt: skip
    _flush_redis()
    print(f"\nsaved {save('rest', {'rows': results})}")


if __name__ == "__main__":
    main(sys.argv[1:])
