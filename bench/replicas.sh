#!/usr/bin/env bash
# Shared-state benchmark (PostgreSQL):
#  1. event ingestion, `--role api`, SQLite versus PostgreSQL (same wrk load as
#     bench/events.sh: -c50, ~1 KB envelopes, every id unique);
#  2. the proxy with the seed's Lambda (GET /, -c32 in all), one `proxy` replica
#     versus two (two wrk, 16 connections each, one per replica; req/s summed).
# Every process runs on this machine, PostgreSQL included.
# Usage: bench/replicas.sh [seconds-per-run] [reps]   (default 10 s, 3 reps)
# PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/test) must allow CREATE DATABASE.
# BASELINE=/path/to/an/older/orchestrator adds that build's PostgreSQL ingestion (a database of
# its own) to the same round robin, for a before/after figure from one run.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
REPS=${2:-3}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/orchestrator-target}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
command -v psql >/dev/null || { echo "psql is needed: apt-get install -y postgresql-client" >&2; exit 1; }
# The same build set as bench/events.sh and bench/proxy.sh, so running them all does not rebuild.
cargo build --release --bin orchestrator --example bench_ceiling >&2
BIN=$CARGO_TARGET_DIR/release/orchestrator
WORK=$(mktemp -d)
DB=orch_bench_$$
PG_URL=${PG_ADMIN_URL%/*}/$DB
PIDS=()
kill_tree() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
  kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
  for pid in "${PIDS[@]}"; do kill_tree "$pid"; done
  psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS ${DB}_base WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $DB" >/dev/null

start() { # name, command...: sets <name>_PID and <name>_URL
  local name=$1; shift
  "$@" > "$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  printf -v "${name}_PID" '%s' "$pid"
  for _ in $(seq 100); do
    grep -q "listening on http://" "$WORK/$name.log" && break
    sleep 0.1
  done
  local url
  url=$(grep -o 'listening on http://[0-9.:]*' "$WORK/$name.log" | head -1 | sed 's/listening on //')
  [ -n "$url" ] || { echo "$name did not start:" >&2; cat "$WORK/$name.log" >&2; exit 1; }
  printf -v "${name}_URL" '%s' "$url"
}

summary() { # wrk output file -> "req/s p50 p99 requests non2xx"
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ {rps=$2} /^ +50%/ {p50=ms($2)} /^ +99%/ {p99=ms($2)}
    /requests in/ {reqs=$1} /Non-2xx/ {bad=$NF}
    END {printf "%d %.2f %.2f %d %d\n", rps, p50, p99, reqs, bad+0}' "$1"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# 1. Ingestion.
start sqlite "$BIN" serve --role api --listen 127.0.0.1:0 --data-dir "$WORK/sqlite"
DATABASE_URL=$PG_URL start pg "$BIN" serve --role api --listen 127.0.0.1:0 --data-dir "$WORK/pg"
STORES="sqlite pg"
if [ -n "${BASELINE:-}" ]; then
  psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE ${DB}_base" >/dev/null
  DATABASE_URL=${PG_URL}_base start pgbase "$BASELINE" serve --role api --listen 127.0.0.1:0 --data-dir "$WORK/pgbase"
  STORES="sqlite pg pgbase"
fi
ingest() { # url run-id -> summary (every run its own id, so no event id repeats)
  wrk -t2 -c50 -d"${DURATION}s" --latency -s bench/post_envelope.lua "$1/events/TENANT_PROVISIONING" -- "$2" > "$WORK/wrk.out"
  summary "$WORK/wrk.out"
}
DURATION_SAVED=$DURATION; DURATION=3; ingest "$sqlite_URL" 1 >/dev/null; ingest "$pg_URL" 2 >/dev/null
[ -n "${BASELINE:-}" ] && ingest "$pgbase_URL" 3 >/dev/null
DURATION=$DURATION_SAVED
RUN=3
: > "$WORK/ingest"
for rep in $(seq "$REPS"); do
  for store in $STORES; do
    url=$sqlite_URL; [ "$store" = pg ] && url=$pg_URL; [ "$store" = pgbase ] && url=$pgbase_URL
    RUN=$((RUN + 1))
    read -r rps p50 p99 reqs bad < <(ingest "$url" "$RUN")
    echo "$store $rps $p50 $p99 $reqs $bad" >> "$WORK/ingest"
    echo "ingest rep $rep $store: $rps req/s p50 ${p50}ms p99 ${p99}ms ($bad non-2xx)" >&2
  done
done
pg_stored=$(psql -qtA "$PG_URL" -c "select count(*) from events")
pg_acked=$(awk '$1=="pg" {s+=$5-$6} END {print s}' "$WORK/ingest")
kill_tree "$sqlite_PID"; kill_tree "$pg_PID"; [ -n "${BASELINE:-}" ] && kill_tree "$pgbase_PID"

# 2. Proxy: one replica, then two, same database.
ARCHIVE=$(python3 - <<'PY'
import base64, io, zipfile
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.write("tests/fixtures/seed-app.js", "index.js")
print(base64.b64encode(buf.getvalue()).decode())
PY
)
DATABASE_URL=$PG_URL start api "$BIN" serve --role api --listen 127.0.0.1:0 --data-dir "$WORK/api"
curl -sf -XPOST "$api_URL/apps/deploy" -H 'content-type: application/json' \
  -d "{\"name\":\"seed\",\"archive\":\"$ARCHIVE\"}" > /dev/null
DATABASE_URL=$PG_URL start p1 "$BIN" serve --role proxy --listen 127.0.0.1:0 --data-dir "$WORK/p1"
DATABASE_URL=$PG_URL start p2 "$BIN" serve --role proxy --listen 127.0.0.1:0 --data-dir "$WORK/p2"
for url in "$p1_URL" "$p2_URL"; do
  for _ in $(seq 100); do curl -sf -H 'Host: seed.localhost' "$url/" > /dev/null && break; sleep 0.1; done
  wrk -t1 -c16 -d3s -H 'Host: seed.localhost' "$url/" > /dev/null
done
: > "$WORK/proxy"
for rep in $(seq "$REPS"); do
  wrk -t2 -c32 -d"${DURATION}s" --latency -H 'Host: seed.localhost' "$p1_URL/" > "$WORK/one.out"
  read -r rps p50 p99 _ bad < <(summary "$WORK/one.out")
  echo "one $rps $p50 $p99 $bad" >> "$WORK/proxy"
  wrk -t1 -c16 -d"${DURATION}s" --latency -H 'Host: seed.localhost' "$p1_URL/" > "$WORK/a.out" &
  A=$!
  wrk -t1 -c16 -d"${DURATION}s" --latency -H 'Host: seed.localhost' "$p2_URL/" > "$WORK/b.out"
  wait $A
  read -r ra pa50 pa99 _ bada < <(summary "$WORK/a.out")
  read -r rb pb50 pb99 _ badb < <(summary "$WORK/b.out")
  worst99=$(awk -v a="$pa99" -v b="$pb99" 'BEGIN {print (a > b) ? a : b}')
  echo "two $((ra + rb)) $pa50 $worst99 $((bada + badb))" >> "$WORK/proxy"
  echo "proxy rep $rep: one replica $rps req/s (p99 ${p99}ms); two replicas $((ra + rb)) req/s (worst p99 ${worst99}ms)" >&2
done

col() { awk -v k="$1" -v c="$2" '$1==k {print $c}' "$3" | median; }
echo
echo "| ingestion (--role api, -c50) | req/s (median) | p50 ms | p99 ms | non-2xx |"
echo "|---|---|---|---|---|"
for store in $STORES; do
  name="SQLite (WAL, synchronous=FULL)"; [ "$store" = pg ] && name="PostgreSQL (local server)"
  [ "$store" = pgbase ] && name="PostgreSQL, BASELINE build"
  echo "| $name | $(col $store 2 "$WORK/ingest") | $(col $store 3 "$WORK/ingest") | $(col $store 4 "$WORK/ingest") | $(col $store 6 "$WORK/ingest") |"
done
echo
echo "| proxy, GET / (-c32 in all) | req/s (median) | p50 ms | p99 ms | non-2xx |"
echo "|---|---|---|---|---|"
echo "| one proxy replica | $(col one 2 "$WORK/proxy") | $(col one 3 "$WORK/proxy") | $(col one 4 "$WORK/proxy") | $(col one 5 "$WORK/proxy") |"
echo "| two proxy replicas | $(col two 2 "$WORK/proxy") | $(col two 3 "$WORK/proxy") | $(col two 4 "$WORK/proxy") | $(col two 5 "$WORK/proxy") |"
echo
echo "PostgreSQL events stored: $pg_stored; acknowledged with 200 (warm-up excluded): $pg_acked"
[ "$pg_stored" -ge "$pg_acked" ] || { echo "FAIL: fewer events stored than acknowledged" >&2; exit 1; }
