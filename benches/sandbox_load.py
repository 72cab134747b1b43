#!/usr/bin/env python3
"""How many HubSpot batch requests the sandbox answers per second, unthrottled.

    cargo build --release
    apt-get install -y wrk                      # Debian's wrk 4.1 (LuaJIT scripting)
    python3 benches/sandbox_load.py             # 5 runs of 10 s after a 5 s warm-up
    python3 benches/sandbox_load.py --quick     # 3 runs of 3 s

What it does, all under --root (default /tmp/handoff-bench/sandbox-load):

1. writes --bodies distinct request bodies for
   `POST /crm/v3/objects/contacts/batch/upsert`, each 100 inputs with distinct emails
   (`lead<N>@load.handoff.dev`, N over all bodies) and four properties
   (firstname, lastname, company, lead_score), one JSON body per line;
2. starts `handoff sandbox --port P --burst-per-10s 0 --daily-limit 0` (the request log
   stays on at its default size, as a user runs it) from a private copy of the binary;
3. drives it with wrk from a second process: --connections keep-alive connections,
   --threads threads, bodies pre-formatted in the Lua state and sent round-robin (each
   thread starts at a different offset). The first pass over the bodies creates the
   contacts; every later request updates 100 existing ones, which is the steady state
   of the measurement (the warm-up does the creating);
4. a warm-up run, then --runs measured runs of --duration seconds; after each, the
   sandbox's own counters (`/_sandbox/stats`) are checked against wrk's count and
   every answer must have been a 200.

The load generator and the sandbox share the machine: on 2 cores, wrk's CPU is CPU
the sandbox does not get. The summary reports both processes' CPU time per run.

Prints a Markdown summary (median req/s, records/s, p50/p99 latency) and writes every
run's raw numbers to --root/results-<time>.json.
"""

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PATH = "/crm/v3/objects/contacts/batch/upsert"
BATCH = 100

LUA = r"""
-- Pre-formatted requests, sent round-robin; a JSON summary line at the end.
local requests = {}
local i = 0
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer bench-token",
  }
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("POST", args[2], headers, line)
  end
  -- Threads start apart so they do not send the same body at the same time.
  i = math.floor((tid or 0) * #requests / (tonumber(args[3]) or 1))
end

function request()
  i = i % #requests + 1
  return requests[i]
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.status,
    summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_bodies(path, count):
    """`count` bodies of 100 upsert inputs, emails distinct across all of them."""
    with open(path, "w") as out:
        for b in range(count):
            inputs = []
            for r in range(BATCH):
                n = b * BATCH + r
                inputs.append({
                    "id": f"lead{n}@load.handoff.dev",
                    "idProperty": "email",
                    "properties": {
                        "firstname": f"First{n}",
                        "lastname": f"Last{n}",
                        "company": f"Company {n % 997}",
                        "lead_score": str(n % 100),
                    },
                })
            out.write(json.dumps({"inputs": inputs}, separators=(",", ":")))
            out.write("\n")


def http_json(url, method="GET"):
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def cpu_seconds(pid):
    """utime + stime of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_wrk(args, base, lua, bodies):
    command = [
        "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration_now}s",
        "--timeout", "10s", "-s", lua, base, "--", bodies, PATH, str(args.threads),
    ]
    started = time.monotonic()
    before = os.times()
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    after = os.times()
    wall = time.monotonic() - started
    line = next(l for l in output.splitlines() if l.startswith("WRK_JSON "))
    result = json.loads(line[len("WRK_JSON "):])
    result["wrk_cpu_s"] = round((after.children_user - before.children_user)
                                + (after.children_system - before.children_system), 3)
    result["wall_s"] = round(wall, 3)
    return result


def summarize(runs):
    def median(key):
        return statistics.median(r[key] for r in runs)
    return {
        "req_per_s": median("req_per_s"),
        "records_per_s": median("records_per_s"),
        "p50_ms": median("p50_us") / 1000,
        "p90_ms": median("p90_us") / 1000,
        "p99_ms": median("p99_us") / 1000,
        "sandbox_cpu_share": median("sandbox_cpu_share"),
        "wrk_cpu_share": median("wrk_cpu_share"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", default=os.path.join(REPO, "target", "release", "handoff"))
    parser.add_argument("--root", default="/tmp/handoff-bench/sandbox-load")
    parser.add_argument("--bodies", type=int, default=2000, help="distinct request bodies (x100 contacts)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5, help="seconds")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--request-log-size", type=int, default=None,
                        help="the sandbox's --request-log-size (default: its own default)")
    parser.add_argument("--quick", action="store_true", help="3 runs of 3 s after a 2 s warm-up")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.duration, args.warmup = 3, 3, 2
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")
    if not os.path.exists(args.bin):
        sys.exit(f"{args.bin} does not exist: cargo build --release first")

    os.makedirs(args.root, exist_ok=True)
    binary = os.path.join(args.root, "handoff")
    shutil.copy2(args.bin, binary)
    lua = os.path.join(args.root, "upsert.lua")
    with open(lua, "w") as f:
        f.write(LUA)
    bodies = os.path.join(args.root, f"bodies-{args.bodies}.ndjson")
    if not os.path.exists(bodies):
        write_bodies(bodies + ".tmp", args.bodies)
        os.replace(bodies + ".tmp", bodies)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [binary, "sandbox", "--port", str(port), "--burst-per-10s", "0", "--daily-limit", "0"]
    if args.request_log_size is not None:
        command += ["--request-log-size", str(args.request_log_size)]
    server = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                http_json(f"{base}/_sandbox/health")
                break
            except OSError:
                time.sleep(0.05)
        else:
            sys.exit("the sandbox did not start")

        args.duration_now = args.warmup
        warmup = run_wrk(args, base, lua, bodies)
        print(f"warm-up: {warmup['requests'] / (warmup['duration_us'] / 1e6):,.0f} req/s", file=sys.stderr)

        runs = []
        for n in range(args.runs):
            http_json(f"{base}/_sandbox/stats/reset", "POST")
            cpu_before = cpu_seconds(server.pid)
            args.duration_now = args.duration
            result = run_wrk(args, base, lua, bodies)
            sandbox_cpu = cpu_seconds(server.pid) - cpu_before
            stats = http_json(f"{base}/_sandbox/stats")
            seconds = result["duration_us"] / 1e6
            result["req_per_s"] = round(result["requests"] / seconds, 1)
            result["records_per_s"] = round(result["requests"] * BATCH / seconds, 1)
            result["sandbox_cpu_s"] = round(sandbox_cpu, 3)
            result["sandbox_cpu_share"] = round(sandbox_cpu / seconds, 3)
            result["wrk_cpu_share"] = round(result["wrk_cpu_s"] / seconds, 3)
            result["sandbox_rss_mib"] = round(rss_mib(server.pid), 1)
            ok = stats["by_endpoint"].get(f"POST {PATH}", {}).get("200", 0)
            result["sandbox_requests"] = stats["requests"]
            result["sandbox_200"] = ok
            errors = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
            if errors or ok != stats["requests"]:
                sys.exit(f"run {n + 1}: errors in the run: {result} {stats}")
            # wrk stops mid-request at the deadline, so the sandbox may have answered a few more.
            if not 0 <= stats["requests"] - result["requests"] <= args.connections:
                sys.exit(f"run {n + 1}: wrk counted {result['requests']}, the sandbox {stats['requests']}")
            runs.append(result)
            print(f"run {n + 1}: {result['req_per_s']:,.0f} req/s, p50 {result['p50_us'] / 1000:.2f} ms, "
                  f"p99 {result['p99_us'] / 1000:.2f} ms, sandbox CPU {result['sandbox_cpu_share']:.2f}, "
                  f"wrk CPU {result['wrk_cpu_share']:.2f}", file=sys.stderr)
        contacts = http_json(f"{base}/_sandbox/contacts")["total"]
    finally:
        server.terminate()
        server.wait(timeout=10)

    summary = summarize(runs)
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit + ("-dirty" if dirty else ""),
        "machine": {"nproc": os.cpu_count(), "platform": platform.platform(),
                    "mem_total_kib": next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))},
        "args": {k: v for k, v in vars(args).items() if k != "duration_now"},
        "contacts_after": contacts,
        "warmup": warmup,
        "runs": runs,
        "summary": summary,
    }
    out = os.path.join(args.root, f"results-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json")
    with open(out, "w") as f:
        json.dump(record, f, indent=2)

    print(f"| runs | connections | req/s (median) | records/s | p50 | p90 | p99 | sandbox CPU | wrk CPU |")
    print(f"| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {len(runs)} × {args.duration} s | {args.connections} | {summary['req_per_s']:,.0f} | "
          f"{summary['records_per_s']:,.0f} | {summary['p50_ms']:.2f} ms | {summary['p90_ms']:.2f} ms | "
          f"{summary['p99_ms']:.2f} ms | {summary['sandbox_cpu_share']:.2f} cores | {summary['wrk_cpu_share']:.2f} cores |")
    per_run = ", ".join(f"{r['req_per_s']:,.0f}" for r in runs)
    print(f"\nper run req/s: {per_run}; contacts in the sandbox: {contacts:,}; raw: {out}")


if __name__ == "__main__":
    main()
