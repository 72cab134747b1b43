#!/bin/sh
# A/B of two handoff binaries on the 1M plan, alternated run by run so both see the same load.
#
#   benches/ab_plan.sh OLD_BIN NEW_BIN [RUNS]
#
# Needs the harness's 1M data and project (python3 benches/bench.py --sizes 1M ...), and two
# state stores under $AB/states/ (default AB=/tmp/perfcmp):
#   legacy-1M.db  the state after a first sync of 1M rows by a binary from before the XXH64
#                 fingerprints (e.g. the harness's snap/1M/first_run/state.db made with OLD_BIN);
#   v2-1M.db      the same state after one `handoff sync` by NEW_BIN (it restamps every row).
# "no change" runs each binary on its own state; "on-legacy" is NEW_BIN's first plan after an
# upgrade; "first-run" is the empty state. Prints wall time, peak RSS and CPU of each process.
set -e
OLD=$1; NEW=$2; N=${3:-5}; AB=${AB:-/tmp/perfcmp}; ROOT=${ROOT:-/tmp/handoff-bench}
mkdir -p "$AB" && cd "$AB"
[ -d p1m ] || { cp -r "$ROOT/proj/1M" p1m; rm -rf p1m/.handoff; }
export HUBSPOT_BASE_URL=http://127.0.0.1:9 HUBSPOT_TOKEN=x HANDOFF_LOG=warn HANDOFF_WAREHOUSE="$ROOT/data/1M/base"
use() { rm -rf p1m/.handoff; mkdir -p p1m/.handoff; [ -z "$1" ] || cp "states/$1" p1m/.handoff/state.db; }
t() { /usr/bin/time -f "$1 %e s %M KiB cpu %U+%S" "$2" --project p1m plan all_leads --json >/dev/null; }
uptime
for i in $(seq "$N"); do
  use legacy-1M.db; t "old no-change" "$OLD"
  use v2-1M.db;     t "new no-change" "$NEW"
  use "";           t "old first-run" "$OLD"
  use "";           t "new first-run" "$NEW"
  use legacy-1M.db; t "new on-legacy" "$NEW"
done
uptime
