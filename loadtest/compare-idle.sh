#!/usr/bin/env bash
# Server memory per idle, authenticated MQTT session: fleetgate on epoll, fleetgate on io_uring
# and Mosquitto, measured in ONE run on this machine with the same generator and clients.
#
#   loadtest/compare-idle.sh            # 19,000 connections each (about 4 minutes)
#   COUNT=5000 HOLD_SECS=5 loadtest/compare-idle.sh     # a quick look
#
# Installs Mosquitto when missing, builds fleetgate and fleetgate-loadtest in release, registers
# COUNT devices, then for each server: starts it on 127.0.0.1 (non-standard port), runs
# `fleetgate-loadtest idle-connections` (checkpoints 2k/5k/10k/15k/COUNT), stops the server by
# its PID. Writes the raw JSON reports and a Markdown table to loadtest/results/ and prints the
# table. Every process is bounded in time (a watchdog per server, deadlines in the generator)
# and stopped by PID; nothing targets addresses outside 127.0.0.0/8.
#
# Environment: COUNT (19000), RATE (4000 connections/s), HOLD_SECS (30), SOURCES (8),
# PROCESSES (2), SERVERS ("fleetgate-epoll fleetgate-io_uring mosquitto"), BASE_PORT (18830),
# RESULTS (loadtest/results), CARGO_TARGET_DIR (~/.cache/fleetgate/target), BUILD_ARGS (extra
# `cargo build` arguments for fleetgate, e.g. "--no-default-features" for the system allocator).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleetgate/target}"
COUNT="${COUNT:-19000}"
RATE="${RATE:-4000}"
HOLD_SECS="${HOLD_SECS:-30}"
SOURCES="${SOURCES:-8}"
PROCESSES="${PROCESSES:-2}"
SERVERS="${SERVERS:-fleetgate-epoll fleetgate-io_uring mosquitto}"
BASE_PORT="${BASE_PORT:-18830}"
RESULTS="${RESULTS:-$ROOT/loadtest/results}"
SEED=1
RUN=$(mktemp -d /tmp/fleetgate-compare-idle.XXXXXX)
SERVER_LIMIT_SECS=900 # a server is killed by its watchdog after this, whatever happens

log() { printf '[compare-idle] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# PIDs this script started, stopped on exit whatever happens.
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# --- Mosquitto -----------------------------------------------------------------------------
MOSQUITTO=$(command -v mosquitto || true)
[ -z "$MOSQUITTO" ] && [ -x /usr/sbin/mosquitto ] && MOSQUITTO=/usr/sbin/mosquitto
if [ -z "$MOSQUITTO" ] && [[ " $SERVERS " == *" mosquitto "* ]]; then
  log "installing mosquitto"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto >/dev/null \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto >/dev/null; }
  MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
fi

# --- Build, then work on private copies (the target directory is shared with other builds) --
log "building fleetgate and fleetgate-loadtest (release)"
cargo build --release --locked -p fleetgate-loadtest --message-format=json-render-diagnostics >"$RUN/build.jsonl"
# shellcheck disable=SC2086 # BUILD_ARGS is a list of arguments
cargo build --release --locked -p fleetgate-api ${BUILD_ARGS:-} --message-format=json-render-diagnostics >>"$RUN/build.jsonl"
exe() { grep -o "\"executable\":\"[^\"]*/$1\"" "$RUN/build.jsonl" | tail -1 | sed 's/^"executable":"//; s/"$//'; }
mkdir -p "$RUN/bin"
cp "$(exe fleetgate)" "$RUN/bin/fleetgate"
cp "$(exe fleetgate-loadtest)" "$RUN/bin/fleetgate-loadtest"
FLEETGATE="$RUN/bin/fleetgate"
LOADTEST="$RUN/bin/fleetgate-loadtest"

log "registering $COUNT devices (seed $SEED)"
"$LOADTEST" credentials --count "$COUNT" --product lt --seed "$SEED" --out "$RUN/devices.json"

CHECKPOINTS="2000, 5000, 10000, 15000, $COUNT"
if [ "$COUNT" -le 15000 ]; then CHECKPOINTS="$((COUNT / 4)), $((COUNT / 2)), $((COUNT * 3 / 4)), $COUNT"; fi

# wait_for_log FILE PATTERN PID: until FILE contains PATTERN (60 s at most, and only while PID lives).
wait_for_log() {
  for _ in $(seq 600); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { log "server exited:"; tail -20 "$1" >&2; return 1; }
    sleep 0.1
  done
  log "timed out waiting for '$2' in $1"; return 1
}

# wait_for_port PORT PID: until 127.0.0.1:PORT accepts a connection (60 s at most, while PID
# lives). Mosquitto block-buffers its log when it goes to a file, so its log cannot be watched.
wait_for_port() {
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || { log "server pid $2 exited"; return 1; }
    sleep 0.1
  done
  log "timed out waiting for 127.0.0.1:$1"; return 1
}

# stop_pid PID: SIGTERM, then SIGKILL after 30 s.
stop_pid() {
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $1 ignored SIGTERM for 30 s; killing"; kill -KILL "$1" 2>/dev/null || true
}

# run_one NAME PORT: start the server, measure, stop it.
run_one() {
  local name=$1 port=$2 dir="$RUN/$1" pid
  mkdir -p "$dir"
  case $name in
    fleetgate-*)
      local driver=${name#fleetgate-}
      "$FLEETGATE" --data-dir "$dir/data" provision "$RUN/devices.json" >"$dir/provision.json"
      local off=()
      for x in mqtts mqtt_ws coap coaps device_https app_mqtt; do off+=(--set "engine.$x.enabled=false"); done
      "$FLEETGATE" --data-dir "$dir/data" --api-listen "127.0.0.1:$((port + 1))" --log-format json \
        --set "engine.mqtt.listen=127.0.0.1:$port" --set "engine.driver=$driver" "${off[@]}" >"$dir/server.log" 2>&1 &
      pid=$!; PIDS+=("$pid")
      wait_for_log "$dir/server.log" '"mqtt listening"' "$pid"
      ;;
    mosquitto)
      printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_connections -1\nlog_dest stdout\n' "$port" >"$dir/mosquitto.conf"
      "$MOSQUITTO" -c "$dir/mosquitto.conf" >"$dir/server.log" 2>&1 &
      pid=$!; PIDS+=("$pid")
      wait_for_port "$port" "$pid"
      ;;
    *) log "unknown server $name"; return 1 ;;
  esac
  # The watchdog takes its sleep down with it when stopped, so no stray timer outlives the run
  # (and none can signal a later process that reuses the PID).
  (
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    sleep "$SERVER_LIMIT_SECS" & s=$!
    wait "$s" && kill -KILL "$pid" 2>/dev/null
  ) >/dev/null 2>&1 &
  local watchdog=$!; PIDS+=("$watchdog")

  cat >"$dir/scenario.toml" <<EOF
target = "127.0.0.1:$port"
product = "lt"
seed = $SEED
count = $COUNT
rate = $RATE
sources = $SOURCES
processes = $PROCESSES
keepalive_secs = 300
hold_secs = $HOLD_SECS
checkpoints = [$CHECKPOINTS]
connect_timeout_secs = 10
settle_secs = 3
slope_from = $(echo "$CHECKPOINTS" | cut -d, -f2 | tr -d ' ')
EOF
  log "$name: server pid $pid on 127.0.0.1:$port"
  local rc=0
  "$LOADTEST" idle-connections --scenario "$dir/scenario.toml" --server-pid "$pid" --json "$dir/report.json" \
    | tee "$dir/report.txt" || rc=$?
  # 1 = the run finished but not every connection was established or held: still a result.
  [ "$rc" -le 1 ] || { log "$name: the load test failed (exit $rc)"; stop_pid "$pid"; kill "$watchdog" 2>/dev/null || true; return 1; }
  stop_pid "$pid"
  kill "$watchdog" 2>/dev/null || true
  rm -rf "$dir/data"
  cp "$dir/report.json" "$RESULTS/idle-$name.json"
}

mkdir -p "$RESULTS"
port=$BASE_PORT
rows=()
for name in $SERVERS; do
  run_one "$name" "$port"
  rows+=("$name=$RESULTS/idle-$name.json")
  port=$((port + 10))
done

{
  echo "# Idle MQTT sessions — latest run of loadtest/compare-idle.sh"
  echo
  echo "- date (UTC): $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), open files $(ulimit -n)"
  echo "- fleetgate: $("$FLEETGATE" --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)${BUILD_ARGS:+, built with $BUILD_ARGS}"
  echo "- mosquitto: $("$MOSQUITTO" -h 2>/dev/null | head -1 || true)"
  echo "- rustc: $(rustc --version)"
  echo "- scenario: COUNT=$COUNT RATE=$RATE HOLD_SECS=$HOLD_SECS SOURCES=$SOURCES PROCESSES=$PROCESSES, keep-alive 300 s, checkpoints [$CHECKPOINTS]"
  echo
  "$LOADTEST" summary "${rows[@]}"
} >"$RESULTS/idle-summary.md"
cat "$RESULTS/idle-summary.md"
log "raw reports: $RESULTS/idle-*.json; logs and data: $RUN"
