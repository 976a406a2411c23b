#!/usr/bin/env bash
# Rollback latency on the local backend: POST /apps/{name}/rollback between two deployed versions
# (both already running, and, separately, to a version whose workers are not running yet), side by
# side with its floor, GET /apps/{name} (one management call reading the same app) in the same run.
# Usage: bench/rollback.sh [rounds]   (default 50; BIN=path/to/orchestrator skips the build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-50}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/orchestrator-target}
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin orchestrator >&2
  BIN=$CARGO_TARGET_DIR/release/orchestrator
fi
WORK=$(mktemp -d)
"$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/data" > "$WORK/log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 300); do
  URL=$(grep -o 'listening on http://[0-9.:]*' "$WORK/log" | head -1 | sed 's/listening on //') && [ -n "$URL" ] && break
  sleep 0.1
done
python3 -c "import zipfile; zipfile.ZipFile('$WORK/app.zip','w').write('tests/fixtures/seed-app.js','index.js')"
for _ in 1 2 3; do
  curl -sf -XPUT "$URL/apps/seed/code" -H 'content-type: application/zip' --data-binary @"$WORK/app.zip" > /dev/null
done
timed() { curl -s -o /dev/null -w '%{time_total}\n' "$@"; }
: > "$WORK/warm"; : > "$WORK/cold"; : > "$WORK/read"
for i in $(seq "$ROUNDS"); do
  # Between versions 2 and 3, both running after the first rounds.
  timed -XPOST "$URL/apps/seed/rollback" -H 'content-type: application/json' -d "{\"version\": $((2 + i % 2))}" >> "$WORK/warm"
  timed "$URL/apps/seed" >> "$WORK/read"
  curl -sf -H 'Host: seed.localhost' "$URL/" > /dev/null
done
# To version 1 after its workers were released (deactivate + activate stops them all).
for _ in $(seq "$ROUNDS"); do
  curl -sf -XPOST "$URL/apps/seed/deactivate" > /dev/null
  curl -sf -XPOST "$URL/apps/seed/activate" > /dev/null
  timed -XPOST "$URL/apps/seed/rollback" -H 'content-type: application/json' -d '{"version": 1}' >> "$WORK/cold"
  curl -sf -XPOST "$URL/apps/seed/rollback" -H 'content-type: application/json' -d '{"version": 3}' > /dev/null
done
python3 - "$WORK" <<'PY'
import statistics, sys
def load(name):
    return sorted(float(x) * 1000 for x in open(f"{sys.argv[1]}/{name}") if x.strip())
read = load("read")
floor = statistics.median(read)
print(f"{'':28} {'median ms':>10} {'p95 ms':>8} {'max ms':>8} {'x floor':>8}")
for name, label in [("read", "GET /apps/seed (floor)"), ("warm", "rollback, version running"), ("cold", "rollback, version stopped")]:
    xs = load(name)
    p95 = xs[int(len(xs) * 0.95) - 1]
    print(f"{label:28} {statistics.median(xs):10.2f} {p95:8.2f} {xs[-1]:8.2f} {statistics.median(xs) / floor:8.1f}")
PY
