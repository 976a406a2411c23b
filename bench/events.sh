#!/usr/bin/env bash
# Ingestion benchmark: sustained POST /events/TENANT_PROVISIONING with ~1 KB
# envelopes (each recorded durably in SQLite, jobs not run: --role api),
# side by side with a trivial axum handler (the machine's ceiling).
# Usage: bench/events.sh [seconds-per-run] [reps]   (default 15 s, 3 reps)
# BASELINE=/path/to/an/older/orchestrator runs that build too, in the same
# round robin, for a before/after figure from one run.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15}
REPS=${2:-3}
CONNS=${CONNS:-50}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/orchestrator-target}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
cargo build --release --bin orchestrator --example bench_ceiling >&2
BIN=$CARGO_TARGET_DIR/release
WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

start() { # name, command...: sets <name>_PID and <name>_URL
  local name=$1; shift
  "$@" > "$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  printf -v "${name}_PID" '%s' "$pid"
  for _ in $(seq 100); do
    if grep -q "listening on http://" "$WORK/$name.log"; then break; fi
    sleep 0.1
  done
  local url
  url=$(grep -o 'listening on http://[0-9.:]*' "$WORK/$name.log" | head -1 | sed 's/listening on //')
  [ -n "$url" ] || { echo "$name did not start:" >&2; cat "$WORK/$name.log" >&2; exit 1; }
  printf -v "${name}_URL" '%s' "$url"
}

start ceiling "$BIN/examples/bench_ceiling"
start orch "$BIN/orchestrator" serve --role api --listen 127.0.0.1:0 --data-dir "$WORK/data"
CEILING_URL=$ceiling_URL
ORCH_URL=$orch_URL
TARGETS="ceiling orch"
if [ -n "${BASELINE:-}" ]; then
  start base "$BASELINE" serve --role api --listen 127.0.0.1:0 --data-dir "$WORK/base"
  TARGETS="ceiling orch base"
fi
echo "ceiling: $CEILING_URL  orchestrator: $ORCH_URL  (${DURATION}s x $REPS reps, $CONNS connections)" >&2
idle_rss=$(awk '/VmRSS/ {print $2}' /proc/$orch_PID/status)

run() { # url run-id -> "req/s p50 p99 requests non2xx"
  wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s bench/post_envelope.lua "$1/events/TENANT_PROVISIONING" -- "$2" > "$WORK/wrk.out"
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ {rps=$2}
    /^ +50%/ {p50=ms($2)} /^ +99%/ {p99=ms($2)}
    /requests in/ {reqs=$1}
    /Non-2xx/ {bad=$NF}
    END {printf "%d %.2f %.2f %d %d\n", rps, p50, p99, reqs, bad+0}' "$WORK/wrk.out"
}

# Warm-up, discarded. Every wrk run gets its own run id, so no event id repeats.
RUN=1
wrk -t2 -c"$CONNS" -d5s -s bench/post_envelope.lua "$CEILING_URL/events/TENANT_PROVISIONING" -- "$RUN" >/dev/null
DURATION_SAVED=$DURATION; DURATION=5
read -r _ _ _ warm_reqs warm_bad < <(run "$ORCH_URL" 2)
[ -n "${BASELINE:-}" ] && run "$base_URL" 2 > /dev/null
DURATION=$DURATION_SAVED
total_ok=0
: > "$WORK/results"
for rep in $(seq "$REPS"); do
  for target in $TARGETS; do
    case $target in ceiling) url=$CEILING_URL;; orch) url=$ORCH_URL;; base) url=$base_URL;; esac
    RUN=$((RUN + 1))
    read -r rps p50 p99 reqs bad < <(run "$url" "$((RUN + 1))")
    echo "$target $rps $p50 $p99 $reqs $bad" >> "$WORK/results"
    echo "rep $rep $target: $rps req/s p50 ${p50}ms p99 ${p99}ms ($reqs requests, $bad non-2xx)" >&2
  done
done

stored=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from events').fetchone()[0])" "$WORK/data/orchestrator.db")
peak_rss=$(awk '/VmHWM/ {print $2}' /proc/$orch_PID/status)
ceiling_rss=$(awk '/VmHWM/ {print $2}' /proc/$ceiling_PID/status)
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
c_rps=$(awk '$1=="ceiling" {print $2}' "$WORK/results" | median)
o_rps=$(awk '$1=="orch" {print $2}' "$WORK/results" | median)
o_p50=$(awk '$1=="orch" {print $3}' "$WORK/results" | median)
o_p99=$(awk '$1=="orch" {print $4}' "$WORK/results" | median)
c_p99=$(awk '$1=="ceiling" {print $4}' "$WORK/results" | median)
acked=$(awk -v w=$((warm_reqs - warm_bad)) '$1=="orch" {s+=$5-$6} END {print s+w}' "$WORK/results")
echo
echo "| system | req/s (median) | p50 ms | p99 ms | peak RSS |"
echo "|---|---|---|---|---|"
echo "| axum ceiling (stores nothing) | $c_rps | $(awk '$1=="ceiling" {print $3}' "$WORK/results" | median) | $c_p99 | $((ceiling_rss / 1024)) MiB |"
echo "| orchestrator --role api (SQLite, durable) | $o_rps | $o_p50 | $o_p99 | $((peak_rss / 1024)) MiB (idle $((idle_rss / 1024)) MiB) |"
echo
echo "ratio: $(awk -v a="$o_rps" -v b="$c_rps" 'BEGIN {printf "%.1f%%", 100*a/b}') of the ceiling"
if [ -n "${BASELINE:-}" ]; then
  b_rps=$(awk '$1=="base" {print $2}' "$WORK/results" | median)
  echo "baseline ($BASELINE): $b_rps req/s, p50 $(awk '$1=="base" {print $3}' "$WORK/results" | median) ms, p99 $(awk '$1=="base" {print $4}' "$WORK/results" | median) ms: $(awk -v a="$b_rps" -v b="$c_rps" 'BEGIN {printf "%.1f%%", 100*a/b}') of the ceiling; this build = $(awk -v a="$o_rps" -v b="$b_rps" 'BEGIN {printf "%.1f%%", 100*a/b}') of the baseline"
fi
echo "events stored: $stored; acknowledged with 200 (warm-up included): $acked"
[ "$stored" -ge "$acked" ] || { echo "FAIL: fewer events stored than acknowledged" >&2; exit 1; }
