"""REST throughput against the seed-style baseline, with wrk (32 connections), side by side.

    python -m bench.rest [--sizes 0,10000,100000] [--seconds 5]

For each number of sessions already stored, it measures create, get and stats requests per
second on one process each of: the baseline (FastAPI + uvicorn, a dict and a scan, as the
seed); this project on Redis (the multi-worker configuration) under daphne and under
uvicorn, preloaded through its own service; and this project under uvicorn on its embedded
local-memory store (one process, like the baseline's dict), preloaded over HTTP. The baseline
is preloaded through a route of its own. Both uvicorn servers run alike (bench.common).
Prints a table with project/baseline ratios taken in the same run, and a second one with each
server process's CPU time per request (user + system, from /proc, over the wrk run): on a
shared machine the requests/s move with whatever else runs, the CPU a request costs much less.
Needs Debian's ``wrk`` and ``pip install -r bench/requirements.txt``.
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


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    url: str, seconds: int, script: str | None = None, token: str | None = None, pid: int = 0
) -> tuple[float, float]:
    """Requests/s of ``url``, and the CPU µs per request of the server process ``pid``;
    ``token`` is sent as the session's bearer token (CONTRACT 1b)."""
    cmd = ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", url]
    if token:
        cmd[1:1] = ["-H", f"Authorization: Bearer {token}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if script:
            lua.write(script)
            lua.flush()
            cmd[1:1] = ["-s", lua.name]
        cpu = _cpu_seconds(pid) if pid else 0.0
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        cpu = _cpu_seconds(pid) - cpu if pid else 0.0
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors and int(errors.group(1)) > 0:
        raise RuntimeError(f"{url}: {errors.group(1)} error responses\n{out}")
    done = int(re.search(r"(\d+) requests in", out).group(1))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), cpu * 1e6 / max(1, done)


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
    rows, cpu_rows, results, stored = [], [], [], 0
    with (
        serve("baseline") as (base, base_pid),
        serve("daphne", **PROJECT_ENV) as (daph, daph_pid),
        serve("uvicorn", **PROJECT_ENV) as (uvi, uvi_pid),
        serve("uvicorn", **LOCAL_ENV) as (local, local_pid),
    ):
        hosts = dict(zip(SERVERS, (base, daph, uvi, local), strict=True))
        pids = dict(zip(SERVERS, (base_pid, daph_pid, uvi_pid, local_pid), strict=True))
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
                figures, cpu = {}, {}
                for name, host in hosts.items():
                    path = {"create": "/api/v1/sessions", "get": f"/api/v1/sessions/{ids[host]}",
                            "stats": f"/api/v1/sessions/{ids[host]}/stats"}[endpoint]  # fmt: skip
                    figures[name], cpu[name] = wrk(f"http://{host}{path}", seconds,
                                                   CREATE_LUA if endpoint == "create" else None,
                                                   probes[host].get("session_token"),
                                                   pids[name])  # fmt: skip
                rows.append([size, endpoint, *(figures[n] for n in SERVERS),
                             *(figures[n] / figures["baseline"] for n in SERVERS[1:])])  # fmt: skip
                cpu_rows.append([size, endpoint, *(cpu[n] for n in SERVERS),
                                 *(cpu["baseline"] / cpu[n] for n in SERVERS[1:])])  # fmt: skip
                results.append({"stored": size, "endpoint": endpoint, **figures,
                                "cpu_us_per_request": cpu})  # fmt: skip
                print(f"  {size} {endpoint}: {json.dumps(figures)} cpu µs/req {json.dumps(cpu)}",
                      flush=True)  # fmt: skip
    print(table(
        "REST requests/s, one process each, wrk -t2 -c32 (baseline: dict + scan; project on "
        "Redis under daphne and uvicorn, and on local memory under uvicorn)",
        ["stored", "endpoint", *SERVERS, *(f"{n}/base" for n in SERVERS[1:])],
        rows,
    ))  # fmt: skip
    print(table(
        "Server CPU µs per request (lower is better) and baseline/project (higher is better)",
        ["stored", "endpoint", *SERVERS, *(f"base/{n}" for n in SERVERS[1:])],
        cpu_rows,
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
