#!/usr/bin/env bash
# Cold start with and without the function sandbox, side by side in one run:
# for each rep, on two services (functions.isolation = sandbox | none), deploy
# the seed app under a new name and time (1) the deploy call, (2) the first
# answer (a fresh worker: process start, runtime init, first invocation),
# (3) a warm answer. Prints the median and the spread of each.
# Usage: bench/coldstart.sh [reps]   (default 20; needs root and bubblewrap)
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-20}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/orchestrator-target}
cargo build --release --bin orchestrator --example bench_ceiling >&2
BIN=$CARGO_TARGET_DIR/release/orchestrator
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_url() { # log-file -> url
  for _ in $(seq 300); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$1" | head -1 | sed 's/listening on //') && [ -n "$url" ] && { echo "$url"; return; }
    sleep 0.1
  done
  echo "no server in $1:" >&2; cat "$1" >&2; exit 1
}

ARCHIVE=$(python3 - <<'PY'
import base64, io, zipfile
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.write("tests/fixtures/seed-app.js", "index.js")
print(base64.b64encode(buf.getvalue()).decode())
PY
)

declare -A URL
for mode in sandbox none; do
  ORCHESTRATOR_FUNCTIONS_ISOLATION=$mode \
    "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/$mode" > "$WORK/$mode.log" 2>&1 &
  PIDS+=($!)
  URL[$mode]=$(wait_url "$WORK/$mode.log")
  isolation=$(curl -sf "${URL[$mode]}/health")
  echo "$mode: $isolation" >&2
done

for rep in $(seq "$REPS"); do
  for mode in sandbox none; do
    url=${URL[$mode]}
    name="cold-$rep"
    deploy=$(curl -sf -o /dev/null -w '%{time_total}' -XPOST "$url/apps/deploy" \
      -H 'content-type: application/json' -d "{\"name\":\"$name\",\"archive\":\"$ARCHIVE\"}")
    first=$(curl -sf -o /dev/null -w '%{time_total}' -H "host: $name.localhost" "$url/")
    warm=$(curl -sf -o /dev/null -w '%{time_total}' -H "host: $name.localhost" "$url/")
    echo "$mode $deploy $first $warm" >> "$WORK/times"
    # Its worker goes, so the next rep's app starts on a machine as quiet as this one's.
    curl -sf -o /dev/null -XPOST "$url/apps/$name/deactivate"
  done
done

python3 - "$WORK/times" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
print(f"{'isolation':<10} {'deploy ms':>22} {'first answer ms':>22} {'deploy+first ms':>22} {'warm ms':>18}")
for mode in ("sandbox", "none"):
    mine = [[float(x) * 1000 for x in r[1:]] for r in rows if r[0] == mode]
    cols = list(zip(*mine))
    both = [d + f for d, f, _ in mine]
    fmt = lambda xs: f"{statistics.median(xs):7.1f} ({min(xs):5.1f}-{max(xs):6.1f})"
    print(f"{mode:<10} {fmt(cols[0]):>22} {fmt(cols[1]):>22} {fmt(both):>22} {fmt(cols[2]):>18}")
PY
