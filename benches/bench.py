#!/usr/bin/env python3
"""handoff's benchmark harness (issue #6): one command, whole processes, medians.

    cargo build --release
    python3 benches/bench.py                       # --sizes 100k,1M, 5 runs each
    python3 benches/bench.py --sizes 100k --quick  # a smoke run in about a minute
    python3 benches/bench.py --sizes 10M --skip-first-sync-above 1M

What it does, all outside the repository (under --root, default /tmp/handoff-bench):

1. generates deterministic lead warehouses (benches/gen_leads.py): base, 1 % changed,
   1 % removed, for each size;
2. per size, against an unthrottled sandbox (`handoff sandbox --burst-per-10s 0`),
   times `handoff plan` and `handoff sync` as whole processes (wall time and peak RSS
   from /usr/bin/time) for: first run, rerun with no change, rerun with 1 % changed,
   rerun with 1 % removed. Each sync repetition starts from the same state-store
   snapshot, so repetitions are the same work;
3. in the same run, on the same files, the diff in DuckDB (the Python package, a whole
   process too): new EXCEPT old over the model's columns, plus the removed keys
   (old EXCEPT new on the key); prints handoff plan / DuckDB;
4. sync throughput: the unthrottled ceiling (records per second of the first sync),
   and syncs against a sandbox enforcing 100 and 190 requests per 10 s with the
   connector configured to match: achieved records per second against the rate
   ceiling (requests/s x batch size) and the share of requests throttled.

Results: a Markdown summary on stdout and everything raw in --root/results-*.json.
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
import tempfile
import time
import urllib.request
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

MODEL_COLUMNS = "lead_id, email, first_name, last_name, company, lead_score, territory, last_event_time"
MODEL_TOML = """\
# Every lead, to HubSpot contacts: the benchmark model (no filter, so N rows in = N rows synced).
primary_key = "lead_id"
schedule = "0 0 * * * *"

[[sync]]
connector = "hubspot"
object = "contacts"
mode = "upsert"
match = { column = "email", property = "email" }
mapping = { first_name = "firstname", last_name = "lastname", company = "company", lead_score = "lead_score", territory = "territory", last_event_time = "last_event_time" }
set = { nurture_status = "exited" }
on_remove = { set = { nurture_status = "re-entered" } }
"""
HANDOFF_TOML = """\
[project]
name = "handoff-bench"

[state]
url = "sqlite://.handoff/state.db"

[warehouse]
path = "${HANDOFF_WAREHOUSE}"
"""
CONNECTOR_TOML = """\
kind = "hubspot"
base_url = "${{HUBSPOT_BASE_URL}}"
token = "${{HUBSPOT_TOKEN:-bench-token}}"
batch_size = {batch}
concurrency = {concurrency}
timeout_secs = 60
max_retries = 6

[rate_limit]
requests = {requests}
per_secs = {per_secs}
"""


def parse_size(s):
    s = s.strip()
    mult = {"k": 1_000, "K": 1_000, "m": 1_000_000, "M": 1_000_000}.get(s[-1])
    return int(float(s[:-1]) * mult) if mult else int(s)


def label(n):
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def median(xs):
    return statistics.median(xs) if xs else None


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


def timed(cmd, env=None, cwd=None):
    """Runs cmd under /usr/bin/time; returns wall seconds, peak RSS (KiB), user+sys CPU, stdout."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = ["/usr/bin/time", "-f", "%e %M %U %S", "-o", tf.name] + cmd
        t0 = time.perf_counter()
        p = subprocess.run(full, env=env, cwd=cwd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        fields = tf.read().strip().splitlines()[-1].split()
    if p.returncode not in (0,):
        log(f"  ! exit {p.returncode}: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return {
        "wall_s": wall,
        "rss_kib": int(fields[1]),
        "cpu_s": float(fields[2]) + float(fields[3]),
        "exit": p.returncode,
        "stdout": p.stdout,
    }


def json_lines(out):
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid):
    """user+sys CPU seconds of a running process (to see what the sandbox costs)."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


class Sandbox:
    def __init__(self, binary, burst, cwd):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [binary, "sandbox", "--port", str(self.port), "--burst-per-10s", str(burst), "--daily-limit", "0"]
        self.proc = subprocess.Popen(self.cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                self.get("/_sandbox/health")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("sandbox did not start")

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body[:1] in (b"{", b"[") else body

    def post(self, path):
        req = urllib.request.Request(self.url + path, data=b"{}", method="POST",
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()

    def cpu_s(self):
        return proc_cpu_s(self.proc.pid)

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---------------------------------------------------------------- setup


def machine():
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    git = lambda *a: subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()  # noqa: E731
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty_files": len([x for x in git("status", "--porcelain", "--untracked-files=no").splitlines() if x]),
        "python": platform.python_version(),
        "duckdb": __import__("duckdb").__version__,
        "pyarrow": __import__("pyarrow").__version__,
    }


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def generate(root, n, seed):
    out = os.path.join(root, "data", label(n))
    done = os.path.join(out, f".done-{seed}")
    if os.path.exists(done):
        return out
    log(f"generating {label(n)} rows into {out}")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, os.path.join(HERE, "gen_leads.py"), "--rows", str(n), "--out", out,
                    "--seed", str(seed)], check=True)
    open(done, "w").close()
    log(f"  generated in {time.perf_counter() - t0:.1f} s")
    return out


def write_project(d, model_sql, batch=100, concurrency=4, requests=1_000_000, per_secs=1):
    """A bench project: handoff.toml, models/all_leads.{sql,toml}, connectors/hubspot.toml."""
    os.makedirs(os.path.join(d, "models"), exist_ok=True)
    os.makedirs(os.path.join(d, "connectors"), exist_ok=True)
    files = {
        "handoff.toml": HANDOFF_TOML,
        "models/all_leads.sql": model_sql + "\n",
        "models/all_leads.toml": MODEL_TOML,
        "connectors/hubspot.toml": CONNECTOR_TOML.format(batch=batch, concurrency=concurrency,
                                                          requests=requests, per_secs=per_secs),
    }
    for name, text in files.items():
        with open(os.path.join(d, name), "w") as f:
            f.write(text)


def state_dir(proj):
    return os.path.join(proj, ".handoff")


def save_state(proj, snap):
    shutil.rmtree(snap, ignore_errors=True)
    if os.path.exists(state_dir(proj)):
        shutil.copytree(state_dir(proj), snap)
    else:
        os.makedirs(snap)


def restore_state(proj, snap):
    shutil.rmtree(state_dir(proj), ignore_errors=True)
    if os.listdir(snap):
        shutil.copytree(snap, state_dir(proj))


# ---------------------------------------------------------------- DuckDB

DUCKDB_DIFF = r"""
import sys, time, duckdb
old, new, cols = sys.argv[1], sys.argv[2], sys.argv[3]
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
t0 = time.perf_counter()
upserts = con.execute(f"SELECT count(*) FROM (SELECT {cols} FROM read_parquet('{new}') EXCEPT SELECT {cols} FROM read_parquet('{old}'))").fetchone()[0]
removed = con.execute(f"SELECT count(*) FROM (SELECT lead_id FROM read_parquet('{old}') EXCEPT SELECT lead_id FROM read_parquet('{new}'))").fetchone()[0]
print(f'{{"upserts": {upserts}, "removed": {removed}, "query_s": {time.perf_counter() - t0}}}')
"""


def duckdb_diff(old, new):
    r = timed([sys.executable, "-c", DUCKDB_DIFF, old, new, MODEL_COLUMNS])
    r.update(json.loads(r.pop("stdout").strip().splitlines()[-1]))
    return r


# ---------------------------------------------------------------- the engine cases


CASES = [
    # case, warehouse variant, DuckDB (old, new) or None
    ("first run", "base", None),
    ("no change", "base", ("base", "base")),
    ("1 % changed", "changed", ("base", "changed")),
    ("1 % removed", "removed", ("changed", "removed")),
]


def bench_size(a, binary, n, data):
    root = a.root
    proj = os.path.join(root, "proj", label(n))
    shutil.rmtree(proj, ignore_errors=True)
    write_project(proj, f"SELECT {MODEL_COLUMNS} FROM marketing_leads", concurrency=a.concurrency)
    snaps = os.path.join(root, "snap", label(n))
    shutil.rmtree(snaps, ignore_errors=True)
    os.makedirs(snaps)
    sb = Sandbox(binary, 0, root)
    env = dict(os.environ, HUBSPOT_BASE_URL=sb.url, HUBSPOT_TOKEN="bench-token", HANDOFF_LOG="warn",
               HANDOFF_BIN=binary)
    env.pop("HANDOFF_STATE_URL", None)
    results = []
    try:
        pre = os.path.join(snaps, "empty")
        save_state(proj, pre)
        for case, variant, dd in CASES:
            env["HANDOFF_WAREHOUSE"] = os.path.join(data, variant)
            row = {"size": n, "case": case, "plan": [], "sync": [], "duckdb": []}
            plan_cmd = [binary, "--project", proj, "plan", "all_leads", "--json"]
            sync_cmd = [binary, "--project", proj, "sync", "all_leads", "--json"]
            row["plan_cmd"] = " ".join(plan_cmd[:1] + ["--project", "$PROJ"] + plan_cmd[3:])
            for i in range(a.runs):
                restore_state(proj, pre)
                r = timed(plan_cmd, env=env)
                r["json"] = json_lines(r.pop("stdout"))
                row["plan"].append(r)
                log(f"  {label(n)} {case}: plan {r['wall_s']:.2f} s {r['rss_kib'] / 1024:.0f} MiB")
            first = case == "first run"
            skip_sync = first and n > a.skip_first_sync_above
            sync_runs = a.first_sync_runs if first else a.runs
            if skip_sync:
                row["sync_skipped"] = f"not timed above {label(a.skip_first_sync_above)} rows"
                log(f"  {label(n)} {case}: first sync {row['sync_skipped']}")
                sync_runs = 0
                if a.staged_seed:
                    row["staged_seed"] = staged_seed(a, proj, sb, env, n)
            for i in range(sync_runs):
                restore_state(proj, pre)
                if first:
                    sb.post("/_sandbox/reset")
                sb.post("/_sandbox/stats/reset")
                cpu0 = sb.cpu_s()
                r = timed(sync_cmd, env=env)
                r["sandbox_cpu_s"] = sb.cpu_s() - cpu0
                r["sandbox_stats"] = sb.get("/_sandbox/stats")
                r["sandbox_rss_kib"] = sb.rss_kib()
                r["json"] = json_lines(r.pop("stdout"))
                row["sync"].append(r)
                j = r["json"][0] if r["json"] else {}
                log(f"  {label(n)} {case}: sync {r['wall_s']:.2f} s {r['rss_kib'] / 1024:.0f} MiB "
                    f"status={j.get('status')} +{j.get('added')} ~{j.get('changed')} -{j.get('removed')} "
                    f"calls={j.get('api_calls')} sandbox_cpu={r['sandbox_cpu_s']:.1f}s")
            if dd:
                old = os.path.join(data, dd[0], "marketing_leads.parquet")
                new = os.path.join(data, dd[1], "marketing_leads.parquet")
                for i in range(a.runs):
                    r = duckdb_diff(old, new)
                    row["duckdb"].append(r)
                    log(f"  {label(n)} {case}: duckdb {r['wall_s']:.2f} s (query {r['query_s']:.2f} s) "
                        f"{r['rss_kib'] / 1024:.0f} MiB upserts={r['upserts']} removed={r['removed']}")
            results.append(row)
            # The state after this case's sync is the next case's starting point.
            if row["sync"] or row.get("staged_seed"):
                nxt = os.path.join(snaps, case.replace(" ", "_").replace("%", "pct"))
                save_state(proj, nxt)
                pre = nxt
            elif first:
                # No first sync (too big): later cases would diff against an empty state.
                log(f"  {label(n)}: no state to rerun against; the rerun cases are skipped")
                break
    finally:
        sb.stop()
    return results


def staged_seed(a, proj, sb, env, n):
    """Fills the state store for the rerun cases without holding every contact in the sandbox.

    The model is widened a slice at a time (WHERE lead_id <= k); each step syncs only the
    new slice, then the sandbox is reset, so it never holds more than one slice. The
    state ends exactly as after one first sync of all rows, except that record ids repeat
    between slices (harmless for timing: a removal updates some record either way).
    """
    sql_path = os.path.join(proj, "models", "all_leads.sql")
    full_sql = open(sql_path).read()
    steps = []
    try:
        for k in range(a.seed_step, n + a.seed_step, a.seed_step):
            k = min(k, n)
            with open(sql_path, "w") as f:
                f.write(f"SELECT {MODEL_COLUMNS} FROM marketing_leads WHERE lead_id <= {k}\n")
            sb.post("/_sandbox/reset")
            r = timed([env["HANDOFF_BIN"], "--project", proj, "sync", "all_leads", "--json"], env=env)
            j = json_lines(r["stdout"])
            j = j[0] if j else {}
            steps.append({"upto": k, "wall_s": r["wall_s"], "rss_kib": r["rss_kib"], "added": j.get("added"),
                          "unchanged": j.get("unchanged"), "status": j.get("status")})
            log(f"  staged seed <= {k}: {r['wall_s']:.1f} s {r['rss_kib'] / 1024:.0f} MiB +{j.get('added')} "
                f"={j.get('unchanged')} {j.get('status')}")
    finally:
        with open(sql_path, "w") as f:
            f.write(full_sql)
    return steps


# ---------------------------------------------------------------- throughput under a rate limit


def bench_throttled(a, binary, data, burst):
    rows = int(burst / 10 * 100 * a.throttle_secs)
    proj = os.path.join(a.root, "proj", f"throttled-{burst}")
    shutil.rmtree(proj, ignore_errors=True)
    write_project(proj, f"SELECT {MODEL_COLUMNS} FROM marketing_leads WHERE lead_id <= {rows}",
                  concurrency=a.concurrency, requests=burst, per_secs=10)
    sb = Sandbox(binary, burst, a.root)
    env = dict(os.environ, HUBSPOT_BASE_URL=sb.url, HUBSPOT_TOKEN="bench-token", HANDOFF_LOG="warn",
               HANDOFF_WAREHOUSE=os.path.join(data, "base"))
    try:
        cmd = [binary, "--project", proj, "sync", "all_leads", "--json"]
        r = timed(cmd, env=env)
        r["json"] = json_lines(r.pop("stdout"))
        r["sandbox_stats"] = sb.get("/_sandbox/stats")
    finally:
        sb.stop()
    j = r["json"][0] if r["json"] else {}
    sent = (j.get("added") or 0) + (j.get("changed") or 0)
    ceiling = burst / 10 * 100  # records per second: requests/s x batch size
    secs = (j.get("duration_ms") or 0) / 1000
    out = {
        "burst_per_10s": burst, "rows": rows, "sent": sent, "status": j.get("status"),
        "api_calls": j.get("api_calls"), "throttled": j.get("throttled"),
        "sandbox_requests": r["sandbox_stats"].get("requests"),
        "sandbox_throttled": r["sandbox_stats"].get("throttled"),
        "duration_s": secs, "wall_s": r["wall_s"], "rss_kib": r["rss_kib"],
        "ceiling_rps": ceiling,
        "achieved_rps": sent / secs if secs else None,
        "achieved_rps_wall": sent / r["wall_s"],
        "cmd": "handoff --project $PROJ sync all_leads --json",
    }
    out["share_of_ceiling"] = out["achieved_rps"] / ceiling if out["achieved_rps"] else None
    calls = out["api_calls"] or 0
    out["throttled_share"] = (out["throttled"] or 0) / calls if calls else None
    log(f"  throttled {burst}/10s: {sent} rows in {secs:.1f} s = {out['achieved_rps']:.0f} rec/s "
        f"({out['share_of_ceiling']:.1%} of {ceiling:.0f}); throttled {out['throttled']}/{calls}")
    return out


# ---------------------------------------------------------------- report


def fmt_s(x):
    return "—" if x is None else f"{x:.2f} s" if x < 100 else f"{x:.0f} s"


def fmt_mib(kib):
    return "—" if kib is None else f"{kib / 1024:.0f} MiB"


def summarize(rows, throttled, m, a):
    out = []
    out.append(f"machine: {m['cores']} cores ({m['cpu']}), {m['mem_gib']} GiB; {m['date']}; commit {m['commit']}"
               f"{' + ' + str(m['dirty_files']) + ' modified files' if m['dirty_files'] else ''}; "
               f"duckdb {m['duckdb']}; runs per figure: {a.runs} (median)")
    out.append(f"load average before / after: {m['load_before']} / {m['load_after']}")
    out.append("")
    out.append("| rows | case | plan (median) | plan peak RSS | sync (median) | sync peak RSS | sent | DuckDB diff (process / query) | plan ÷ DuckDB (process / query) |")
    out.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        p = median([x["wall_s"] for x in r["plan"]])
        prss = max([x["rss_kib"] for x in r["plan"]], default=None)
        s = median([x["wall_s"] for x in r["sync"]])
        srss = max([x["rss_kib"] for x in r["sync"]], default=None)
        sent = "—"
        if r["sync"] and r["sync"][0]["json"]:
            j = r["sync"][0]["json"][0]
            sent = f"{(j.get('added') or 0) + (j.get('changed') or 0) + (j.get('removed') or 0):,}"
        d = median([x["wall_s"] for x in r["duckdb"]])
        dq = median([x["query_s"] for x in r["duckdb"]])
        ddesc = f"{fmt_s(d)} / {fmt_s(dq)}" if d else "—"
        ratio = f"{p / d:.2f} / {p / dq:.2f}" if d else "—"
        sync_txt = fmt_s(s) if r["sync"] else r.get("sync_skipped", "—")
        out.append(f"| {label(r['size'])} | {r['case']} | {fmt_s(p)} | {fmt_mib(prss)} | {sync_txt} | "
                   f"{fmt_mib(srss)} | {sent} | {ddesc} | {ratio} |")
    out.append("")
    ceil = [r for r in rows if r["case"] == "first run" and r["sync"]]
    if ceil:
        out.append("Unthrottled engine ceiling (first sync, sandbox with no limit, "
                   f"batch 100, concurrency {a.concurrency}):")
        out.append("")
        out.append("| rows | records/s (sync duration_ms) | records/s (whole process) | handoff CPU | sandbox CPU | sandbox RSS after |")
        out.append("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in ceil:
            rps = [x["json"][0]["added"] / (x["json"][0]["duration_ms"] / 1000) for x in r["sync"] if x["json"]]
            rpw = [x["json"][0]["added"] / x["wall_s"] for x in r["sync"] if x["json"]]
            out.append(f"| {label(r['size'])} | {median(rps):,.0f} | {median(rpw):,.0f} | "
                       f"{median([x['cpu_s'] for x in r['sync']]):.1f} s | "
                       f"{median([x['sandbox_cpu_s'] for x in r['sync']]):.1f} s | "
                       f"{fmt_mib(max(x['sandbox_rss_kib'] for x in r['sync']))} |")
        out.append("")
    if throttled:
        out.append("Throttled (sandbox enforces the burst limit; connector configured to the same limit, batch 100):")
        out.append("")
        out.append("| limit | rows | duration | achieved records/s | rate ceiling | share of ceiling | requests | throttled (429) |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for t in throttled:
            out.append(f"| {t['burst_per_10s']} / 10 s | {t['sent']:,} | {fmt_s(t['duration_s'])} | "
                       f"{t['achieved_rps']:,.0f} | {t['ceiling_rps']:,.0f} | {t['share_of_ceiling']:.1%} | "
                       f"{t['api_calls']} | {t['throttled']} ({t['throttled_share']:.2%}) |")
        out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100k,1M", help="comma-separated row counts: 100k,1M,10M")
    ap.add_argument("--runs", type=int, default=5, help="repetitions per figure (median)")
    ap.add_argument("--first-sync-runs", type=int, default=3, help="repetitions of the first (full) sync")
    ap.add_argument("--skip-first-sync-above", default="10M",
                    help="sizes above this skip the first sync (and so the reruns)")
    ap.add_argument("--staged-seed", action="store_true",
                    help="above --skip-first-sync-above, fill the state in untimed slices so the reruns still run")
    ap.add_argument("--seed-step", type=int, default=1_000_000, help="rows per slice of --staged-seed")
    ap.add_argument("--throttle-secs", type=float, default=60, help="length of each throttled run")
    ap.add_argument("--no-throttled", action="store_true", help="skip the throttled runs")
    ap.add_argument("--no-engine", action="store_true", help="only the throttled runs")
    ap.add_argument("--concurrency", type=int, default=4, help="connector requests in flight")
    ap.add_argument("--quick", action="store_true", help="1 run per figure, 10 s throttled runs")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--commit", help="the commit --bin was built from (default: the checkout's HEAD)")
    ap.add_argument("--root", default="/tmp/handoff-bench")
    ap.add_argument("--bin", default=os.path.join(REPO, "target", "release", "handoff"))
    a = ap.parse_args(argv)
    if a.quick:
        a.runs, a.first_sync_runs, a.throttle_secs = 1, 1, 10
    a.skip_first_sync_above = parse_size(a.skip_first_sync_above)
    if os.path.realpath(a.root).startswith(os.path.realpath(REPO) + os.sep):
        sys.exit("--root must be outside the repository")
    for mod in ("duckdb", "pyarrow", "numpy"):
        try:
            __import__(mod)
        except ImportError:
            log(f"installing {mod}")
            subprocess.run([sys.executable, "-m", "pip", "install", "--user", "--quiet", mod], check=True)
    os.makedirs(a.root, exist_ok=True)
    # A private copy: a rebuild of target/ during the run cannot change the binary under test.
    binary = os.path.join(a.root, "bin", "handoff")
    os.makedirs(os.path.dirname(binary), exist_ok=True)
    shutil.copy2(a.bin, binary)

    m = machine()
    if a.commit:
        m["commit"], m["dirty_files"] = a.commit, 0
    m["load_before"] = loadavg()
    sizes = [parse_size(s) for s in a.sizes.split(",") if s]
    rows, throttled = [], []
    if not a.no_engine:
        for n in sizes:
            data = generate(a.root, n, a.seed)
            rows += bench_size(a, binary, n, data)
    if not a.no_throttled:
        need = int(190 / 10 * 100 * a.throttle_secs)
        tdata = generate(a.root, max(need, 1000), a.seed)
        for burst in (100, 190):
            throttled.append(bench_throttled(a, binary, tdata, burst))
    m["load_after"] = loadavg()
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(a.root, f"results-{stamp}.json")
    with open(path, "w") as f:
        json.dump({"machine": m, "args": vars(a), "argv": sys.argv, "engine": rows, "throttled": throttled}, f,
                  indent=1, default=str)
    print(summarize(rows, throttled, m, a))
    print(f"raw results: {path}")


if __name__ == "__main__":
    main()
