#!/usr/bin/env bash
# Proxy benchmark: the seed's example Lambda (tests/fixtures/seed-app.js) behind (1) orchestrator's proxy and
# local runtime, (2) a plain Node.js server calling the handler in-process (the
# ceiling), (3) serverless-offline 3/13 in its default mode. wrk -t2 -c32 on
# loopback, GET / and POST /testProxyingWithBody, rep-major round robin.
# Also: idle RSS of the service with 100 deployed apps.
# Usage: bench/proxy.sh [seconds-per-run] [reps]   (default 15 s, 3 reps)
# BASELINE=/path/to/an/older/orchestrator adds that build ("base") to the same round robin.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${1:-15}
REPS=${2:-3}
CONNS=${CONNS:-32}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/orchestrator-target}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
# The same build set as bench/events.sh, so running both does not rebuild.
cargo build --release --bin orchestrator --example bench_ceiling >&2
BIN=$CARGO_TARGET_DIR/release/orchestrator
WORK=$(mktemp -d)
PIDS=()
kill_tree() { # a process and all its descendants (npx leaves serverless as a grandchild)
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
  kill -KILL "$1" 2>/dev/null || true
}
cleanup() {
  for pid in "${PIDS[@]}"; do kill_tree "$pid"; done
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

zip_seed() { python3 - <<'PY'
import base64, io, sys, zipfile
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.write("tests/fixtures/seed-app.js", "index.js")
print(base64.b64encode(buf.getvalue()).decode())
PY
}
ARCHIVE=$(zip_seed)

# orchestrator
# Default logging (info: START/END/REPORT per invocation), to a file as a service would.
"$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/orch" > "$WORK/orch.log" 2>&1 &
ORCH_PID=$!; PIDS+=($ORCH_PID)
ORCH_URL=$(wait_url "$WORK/orch.log")
echo "orchestrator /health: $(curl -sf "$ORCH_URL/health")" >&2
curl -sf -XPOST "$ORCH_URL/apps/deploy" -H 'content-type: application/json' \
  -d "{\"name\":\"seed\",\"archive\":\"$ARCHIVE\"}" > /dev/null
SYSTEMS="orch node sls"
if [ -n "${BASELINE:-}" ]; then
  "$BASELINE" serve --listen 127.0.0.1:0 --data-dir "$WORK/base" > "$WORK/base.log" 2>&1 &
  BASE_PID=$!; PIDS+=($BASE_PID)
  BASE_URL=$(wait_url "$WORK/base.log")
  curl -sf -XPOST "$BASE_URL/apps/deploy" -H 'content-type: application/json' \
    -d "{\"name\":\"seed\",\"archive\":\"$ARCHIVE\"}" > /dev/null
  SYSTEMS="orch base node sls"
fi
# plain node
(cd bench && exec node plain-node-server.js) > "$WORK/node.log" 2>&1 &
NODE_PID=$!; PIDS+=($NODE_PID)
NODE_URL=$(wait_url "$WORK/node.log")
# serverless-offline
mkdir -p "$WORK/sls"
cp tests/fixtures/seed-app.js "$WORK/sls/handler.js"
cat > "$WORK/sls/serverless.yml" <<'YML'
service: seed
frameworkVersion: '3'
provider:
  name: aws
  runtime: nodejs20.x
  stage: dev
  region: us-east-1
functions:
  app:
    handler: handler.handler
    events:
      - http: { path: /, method: ANY }
      - http: { path: '/{proxy+}', method: ANY }
plugins:
  - serverless-offline
YML
echo '{"name":"sls-bench","private":true}' > "$WORK/sls/package.json"
echo "installing serverless@3 serverless-offline@13 ..." >&2
(cd "$WORK/sls" && npm install --no-audit --no-fund --silent serverless@3 serverless-offline@13 >&2)
SLS_PORT=$((20000 + RANDOM % 20000))
(cd "$WORK/sls" && SLS_TELEMETRY_DISABLED=1 SLS_NOTIFICATIONS_MODE=off exec npx serverless offline --host 127.0.0.1 \
  --httpPort $SLS_PORT --lambdaPort $((SLS_PORT + 1)) --websocketPort $((SLS_PORT + 2))) > "$WORK/sls.log" 2>&1 &
SLS_PID=$!; PIDS+=($SLS_PID)
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$SLS_PORT/dev/" > /dev/null 2>&1 && break; sleep 0.1; done
SLS_URL="http://127.0.0.1:$SLS_PORT/dev"

# Functional check: every system answers the seed's routes alike.
for sys in $SYSTEMS; do
  case $sys in orch) base=$ORCH_URL; host=(-H "Host: seed.localhost");; base) base=$BASE_URL; host=(-H "Host: seed.localhost");; node) base=$NODE_URL; host=();; sls) base=$SLS_URL; host=();; esac
  got="$(curl -s "${host[@]}" "$base/")|$(curl -s "${host[@]}" -XPOST "$base/testProxyingWithBody" -H 'content-type: application/json' -d '{"text":"hi"}')"
  [ "$got" = "success|hi" ] || { echo "$sys answered '$got'" >&2; exit 1; }
done

idle_rss() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
descendants() { # a process and all its descendants (a sandboxed worker is bwrap -> bwrap -> node)
  local child
  echo "$1"
  for child in $(pgrep -P "$1" 2>/dev/null); do descendants "$child"; done
}
tree_hwm() { # sum of VmHWM (KiB) over a process and its descendants
  local total=0 pid
  for pid in $(descendants "$1"); do
    total=$((total + $(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)))
  done
  echo $total
}

tree_pss() { # sum of Pss (KiB) over a process and its descendants: shared pages (the node binary) counted once
  local total=0 pid
  for pid in $(descendants "$1"); do
    total=$((total + $(awk '/^Pss:/ {print $2}' /proc/$pid/smaps_rollup 2>/dev/null || echo 0)))
  done
  echo $total
}
# Highest tree_pss of the orchestrator, sampled every 0.5 s while it is under load.
echo 0 > "$WORK/orch_pss"
sample_pss() {
  local peak now
  peak=$(cat "$WORK/orch_pss")
  while kill -0 "$1" 2>/dev/null; do
    now=$(tree_pss "$ORCH_PID"); [ "$now" -gt "$peak" ] && peak=$now && echo "$peak" > "$WORK/orch_pss"
    sleep 0.5
  done
}

run() { # system route -> "req/s p50 p99 non2xx"
  local base extra=()
  case $1 in orch) base=$ORCH_URL; extra=(-H "Host: seed.localhost");; base) base=$BASE_URL; extra=(-H "Host: seed.localhost");; node) base=$NODE_URL;; sls) base=$SLS_URL;; esac
  case $2 in get) path=/; script=();; post) path=/testProxyingWithBody; script=(-s bench/post_text.lua);; esac
  wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "${extra[@]}" "${script[@]}" "$base$path" > "$WORK/wrk.out" &
  local wrk_pid=$!
  [ "$1" = orch ] && sample_pss $wrk_pid
  wait $wrk_pid
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ {rps=$2} /^ +50%/ {p50=ms($2)} /^ +99%/ {p99=ms($2)} /Non-2xx/ {bad=$NF}
    END {printf "%d %.2f %.2f %d\n", rps, p50, p99, bad+0}' "$WORK/wrk.out"
}

echo "orchestrator $ORCH_URL, plain node $NODE_URL, serverless-offline $SLS_URL; ${DURATION}s x $REPS, -c$CONNS" >&2
for sys in $SYSTEMS; do for route in get post; do
  DURATION_SAVED=$DURATION; DURATION=5; run $sys $route > /dev/null; DURATION=$DURATION_SAVED
done; done
: > "$WORK/results"
for rep in $(seq "$REPS"); do
  for sys in $SYSTEMS; do for route in get post; do
    read -r rps p50 p99 bad < <(run $sys $route)
    echo "$sys $route $rps $p50 $p99 $bad" >> "$WORK/results"
    echo "rep $rep $sys $route: $rps req/s p50 ${p50}ms p99 ${p99}ms ($bad non-2xx)" >&2
  done; done
done

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
col() { awk -v s="$1" -v r="$2" -v c="$3" '$1==s && $2==r {print $c}' "$WORK/results" | median; }
orch_peak=$(tree_hwm $ORCH_PID); node_peak=$(tree_hwm $NODE_PID); sls_peak=$(tree_hwm $SLS_PID)
echo
echo "| system | route | req/s (median) | p50 ms | p99 ms |"
echo "|---|---|---|---|---|"
for sys in $SYSTEMS; do for route in get post; do
  echo "| $sys | $route | $(col $sys $route 3) | $(col $sys $route 4) | $(col $sys $route 5) |"
done; done
echo
echo "peak RSS (process tree, sum of VmHWM): orchestrator+workers $((orch_peak / 1024)) MiB, plain node $((node_peak / 1024)) MiB, serverless-offline $((sls_peak / 1024)) MiB"
echo "orchestrator+workers peak PSS under load (shared pages counted once, sampled every 0.5 s): $(( $(cat "$WORK/orch_pss") / 1024 )) MiB"
for route in get post; do
  o=$(col orch $route 3); n=$(col node $route 3); s=$(col sls $route 3)
  echo "$route: orchestrator = $(awk -v a="$o" -v b="$n" 'BEGIN {printf "%.0f%%", 100*a/b}') of plain node, $(awk -v a="$o" -v b="$s" 'BEGIN {printf "%.1fx", a/b}') serverless-offline"
  if [ -n "${BASELINE:-}" ]; then
    b=$(col base $route 3)
    echo "$route: BASELINE = $(awk -v a="$b" -v c="$n" 'BEGIN {printf "%.0f%%", 100*a/c}') of plain node; this build = $(awk -v a="$o" -v c="$b" 'BEGIN {printf "%.1f%%", 100*a/c}') of BASELINE"
  fi
done

# Idle memory with 100 deployed apps, on a fresh instance.
"$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/idle" > "$WORK/idle.log" 2>&1 &
IDLE_PID=$!; PIDS+=($IDLE_PID)
IDLE_URL=$(wait_url "$WORK/idle.log")
for i in $(seq 100); do
  curl -sf -XPOST "$IDLE_URL/apps/deploy" -H 'content-type: application/json' \
    -d "{\"name\":\"app-$i\",\"archive\":\"$ARCHIVE\"}" > /dev/null
done
curl -sf -H "Host: app-1.localhost" "$IDLE_URL/" > /dev/null
sleep 2
echo "idle with 100 deployed apps (one warm worker): service $(( $(idle_rss $IDLE_PID) / 1024 )) MiB VmRSS, with workers $(( $(tree_hwm $IDLE_PID) / 1024 )) MiB VmHWM"
