#!/usr/bin/env python3
"""Deterministic lead warehouses for the benchmarks (the demo's schema, without the demo).

    python3 benches/gen_leads.py --rows 1000000 --out /tmp/handoff-bench/data/1M

writes three warehouse directories, each holding one `marketing_leads.parquet`:

    base/      leads 1..N
    changed/   base with 1 % of rows edited in a mapped column (half last_name, half lead_score)
    removed/   changed without another 1 % of rows

Every value is a pure function of (seed, lead_id) through splitmix64, computed in
numpy's wrapping uint64 arithmetic: no RNG stream whose output could change between
library versions. The schema (14 columns: ints, strings, timestamps, nulls) is the one
`handoff demo` writes (src/demo/data.rs), with `now` fixed so reruns are byte-stable.
"""

import argparse
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

TERRITORIES = ["NA-East", "NA-West", "NA-Central", "LATAM", "EMEA-North", "EMEA-South", "APAC", "ANZ"]
FIRST = ["Ada", "Grace", "Linus", "Zoë", "Björn", "Chidi", "Mei", "Arjun", "Sofia", "Mateo", "Aiko",
         "Olu", "Nadia", "Tomás", "Ingrid", "Kwame"]
LAST = ["Lovelace", "Hopper", "Okafor", "Tanaka", "Müller", "García", "Singh", "Kowalski", "Haddad",
        "Novak", "Silva", "Kim", "Dubois", "O'Brien", "Jensen", "Mensah"]
SOURCES = ["webinar", "demo_request", "ebook", "pricing_page", "trial"]
COUNTRIES = ["US", "CA", "BR", "DE", "FR", "JP", "AU", "GB"]

NOW_US = 1_748_736_000_000_000  # 2025-06-01T00:00:00Z, fixed: the data never depends on the clock
HOUR_US = 3_600_000_000
DAY_US = 86_400_000_000
CHUNK = 131_072  # rows per row group (the demo's 8192 * 16)

SCHEMA = pa.schema([
    pa.field("lead_id", pa.int64(), nullable=False),
    pa.field("email", pa.string()),
    pa.field("first_name", pa.string()),
    pa.field("last_name", pa.string()),
    pa.field("company", pa.string()),
    pa.field("territory", pa.string(), nullable=False),
    pa.field("country", pa.string()),
    pa.field("source", pa.string()),
    pa.field("lead_score", pa.int32(), nullable=False),
    pa.field("owner_id", pa.int64()),
    pa.field("nurture_status", pa.string()),
    pa.field("last_event_time", pa.timestamp("us"), nullable=False),
    pa.field("created_at", pa.timestamp("us"), nullable=False),
    pa.field("employees", pa.int32()),
])


def ascii_lower(s):
    return "".join(c.lower() for c in s if c.isascii() and c.isalpha())


def splitmix64(x):
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def field_hash(ids, seed, field):
    """An independent 64-bit hash per (seed, id, field)."""
    return splitmix64(splitmix64(ids ^ np.uint64(seed)) + np.uint64((field * 0x632BE59BD9B4E019) & 0xFFFFFFFFFFFFFFFF))


def below(h, n):
    """A value in 0..n-1 from a hash (n is small, the bias is negligible)."""
    return (h % np.uint64(n)).astype(np.int64)


def unit(h):
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def chunk(lo, hi, seed):
    """Rows lead_id lo..hi-1 of the base table, plus the change/removal selections."""
    ids = np.arange(lo, hi, dtype=np.uint64)
    f = lambda k: field_hash(ids, seed, k)  # noqa: E731
    first_i = below(f(1), len(FIRST))
    last_i = below(f(2), len(LAST))
    company_n = below(f(3), 2000)
    territory_i = below(f(4), len(TERRITORIES))
    score = below(f(5), 101).astype(np.int32)
    has_owner = unit(f(6)) < 0.3
    owner = 101 + below(f(7), 8)
    recent = unit(f(8)) < 0.12
    ago = np.where(recent, 60_000_000 + below(f(9), 3_000_000_000 - 60_000_000),
                   HOUR_US + below(f(9), 30 * DAY_US - HOUR_US))
    last_event = NOW_US - ago
    created = last_event - below(f(10), 90 * DAY_US)
    source_i = below(f(11), len(SOURCES))
    employees = (5 + below(f(12), 4995)).astype(np.int32)
    # 1 % changed (half the score, half the last name), and another 1 % removed.
    change = below(f(20), 100) == 0
    change_score = unit(f(21)) < 0.5
    remove = below(f(22), 100) == 0

    id_str = pc.cast(pa.array(ids.astype(np.int64)), pa.string())
    first_lc = pa.array([ascii_lower(s) for s in FIRST]).take(pa.array(first_i))
    last_lc = pa.array([ascii_lower(s) for s in LAST]).take(pa.array(last_i))
    comp_str = pc.cast(pa.array(company_n), pa.string())
    email = pc.binary_join_element_wise(first_lc, ".", last_lc, id_str, "@company", comp_str, ".example", "")
    base = {
        "lead_id": pa.array(ids.astype(np.int64)),
        "email": email,
        "first_name": pa.array(FIRST).take(pa.array(first_i)),
        "last_name": pa.array(LAST).take(pa.array(last_i)),
        "company": pc.binary_join_element_wise("Company ", comp_str, ""),
        "territory": pa.array(TERRITORIES).take(pa.array(territory_i)),
        "country": pa.array(COUNTRIES).take(pa.array(territory_i % len(COUNTRIES))),
        "source": pa.array(SOURCES).take(pa.array(source_i)),
        "lead_score": pa.array(score),
        "owner_id": pa.array(owner, mask=~has_owner),
        "nurture_status": pa.array(np.full(len(ids), "nurturing", dtype=object), pa.string()),
        "last_event_time": pa.array(last_event, pa.timestamp("us")),
        "created_at": pa.array(created, pa.timestamp("us")),
        "employees": pa.array(employees),
    }
    base_t = pa.table(base, schema=SCHEMA)
    new_score = np.where(change & change_score, (score + 1 + below(f(23), 100)) % 101, score).astype(np.int32)
    new_last = np.where(change & ~change_score, (last_i + 1) % len(LAST), last_i)
    changed = dict(base)
    changed["lead_score"] = pa.array(new_score)
    changed["last_name"] = pa.array(LAST).take(pa.array(new_last))
    changed_t = pa.table(changed, schema=SCHEMA)
    removed_t = changed_t.filter(pa.array(~remove))
    return base_t, changed_t, removed_t, int(change.sum()), int(remove.sum())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=42)
    a = ap.parse_args(argv)
    writers = {}
    for v in ("base", "changed", "removed"):
        os.makedirs(os.path.join(a.out, v), exist_ok=True)
        tmp = os.path.join(a.out, v, "marketing_leads.parquet.tmp")
        writers[v] = (pq.ParquetWriter(tmp, SCHEMA, compression="zstd", compression_level=1), tmp)
    n_changed = n_removed = 0
    for lo in range(1, a.rows + 1, CHUNK):
        hi = min(lo + CHUNK, a.rows + 1)
        b, c, r, nc, nr = chunk(lo, hi, a.seed)
        writers["base"][0].write_table(b, row_group_size=CHUNK)
        writers["changed"][0].write_table(c, row_group_size=CHUNK)
        writers["removed"][0].write_table(r, row_group_size=CHUNK)
        n_changed += nc
        n_removed += nr
    for v, (w, tmp) in writers.items():
        w.close()
        os.replace(tmp, os.path.join(a.out, v, "marketing_leads.parquet"))
    print(f"rows={a.rows} changed={n_changed} removed={n_removed} out={a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
