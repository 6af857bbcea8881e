#!/usr/bin/env bash
# Server memory per registered, sleeping NB-IoT device (CoAP/LwM2M, queue mode) and the time a
# queued command takes to reach a device that wakes, in ONE run on this machine.
#
#   loadtest/sleepers.sh                      # 1,000,000 devices (provisioning takes minutes)
#   COUNT=20000 loadtest/sleepers.sh          # a quick look
#
# Builds fleetgate and fleetgate-loadtest in release, provisions COUNT devices of product
# `nbwm` (CoAP, binary, codec watermeter-v1) WITHOUT secrets (non-secure: no DTLS) with
# `fleetgate provision`, in chunks, starts fleetgate on its own data directory with the CoAP
# listener on 127.0.0.1 and a short awake window, runs `fleetgate-loadtest coap-sleepers`
# (register COUNT devices at RATE, wait until the server hibernated them all, sample its
# memory, queue delayed commands for WAKE devices, wake them), stops fleetgate by its PID and
# writes the JSON report and a Markdown summary to loadtest/results/. Every process is bounded
# in time (a watchdog on the server, a hard deadline in the generator) and stopped by PID;
# nothing targets addresses outside 127.0.0.0/8.
#
# A socket serves another device only AWAKE_WINDOW + 2 s after its device slept (so nothing the
# server sends a sleeper reaches another device), which bounds registrations to about
# SOCKETS / (DEVICE_AWAKE_MS/1000 + AWAKE_WINDOW + 2) per second: 15000 / 8 = 1875 with the
# defaults. 1,000,000 devices: about 7 minutes of provisioning, 9 of registering.
#
# Environment: COUNT (1000000), RATE (registrations/s, 1800), SOCKETS (generator UDP sockets,
# 15000), SOURCES (8), AWAKE_WINDOW (the server's engine.lwm2m.awake_window_secs, 5),
# DEVICE_AWAKE_MS (1000), WAKE (1000), COMMANDS (per woken device, 1), BASE_PORT (15680: CoAP
# on it, the API on +1, MQTT on +2), CHUNK (devices per provisioning file, 100000), RESULTS
# (loadtest/results), CARGO_TARGET_DIR (~/.cache/fleetgate/target).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleetgate/target}"
COUNT="${COUNT:-1000000}"
RATE="${RATE:-1800}"
SOCKETS="${SOCKETS:-15000}"
SOURCES="${SOURCES:-8}"
AWAKE_WINDOW="${AWAKE_WINDOW:-5}"
DEVICE_AWAKE_MS="${DEVICE_AWAKE_MS:-1000}"
WAKE="${WAKE:-1000}"
COMMANDS="${COMMANDS:-1}"
BASE_PORT="${BASE_PORT:-15680}"
CHUNK="${CHUNK:-100000}"
RESULTS="${RESULTS:-$ROOT/loadtest/results}"
SEED=1
PRODUCT=nbwm
FIRST_NODE=1
RUN=$(mktemp -d /tmp/fleetgate-sleepers.XXXXXX)
# Registering at RATE, twice over, plus hibernation, wakes and slack: the server's watchdog.
SERVER_LIMIT_SECS=$((2 * COUNT / RATE + 4 * AWAKE_WINDOW + 900))

log() { printf '[sleepers] %s\n' "$*" >&2; }

[ "$WAKE" -le "$COUNT" ] || WAKE=$COUNT

# PIDs this script started, stopped on exit whatever happens.
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# --- Build, then work on private copies (the target directory is shared with other builds) --
log "building fleetgate and fleetgate-loadtest (release)"
cargo build --release --locked -p fleetgate-api -p fleetgate-loadtest --message-format=json-render-diagnostics >"$RUN/build.jsonl"
exe() { grep -o "\"executable\":\"[^\"]*/$1\"" "$RUN/build.jsonl" | tail -1 | sed 's/^"executable":"//; s/"$//'; }
mkdir -p "$RUN/bin"
cp "$(exe fleetgate)" "$RUN/bin/fleetgate"
cp "$(exe fleetgate-loadtest)" "$RUN/bin/fleetgate-loadtest"
FLEETGATE="$RUN/bin/fleetgate"
LOADTEST="$RUN/bin/fleetgate-loadtest"
DATA="$RUN/data"

# --- Provision: the product, then COUNT devices without secrets, CHUNK per file -----------
# The product is the model of api/tests/coap.rs (and of sleepers::product_json).
PRODUCT_JSON='{"product_id":"'$PRODUCT'","app_id":"default","name":"nb-water-meter","protocol_type":"CoAP","data_format":"binary","codec":"watermeter-v1","device_type":"WaterMeter","service_capabilities":[{"service_id":"WaterMeter","properties":[{"property_name":"battery_level","data_type":"int","required":false,"min":"0","max":"100","method":"R"},{"property_name":"signal_strength","data_type":"int","required":false,"min":"-140","max":"0","method":"R"},{"property_name":"meter_reading","data_type":"int","required":false,"min":"0","max":"4294967295","method":"R"},{"property_name":"valve","data_type":"string","required":false,"enum_list":["OPEN","CLOSED"],"method":"R"}],"commands":[{"command_name":"SET_VALVE","paras":[{"para_name":"valve","data_type":"string","required":true,"enum_list":["OPEN","CLOSED"]}]},{"command_name":"SET_INTERVAL","paras":[{"para_name":"interval","data_type":"int","required":true,"min":"60","max":"86400"}]}]}]}'
log "provisioning $COUNT devices of product $PRODUCT in chunks of $CHUNK"
prov_start=$(date +%s)
first=0
while [ "$first" -lt "$COUNT" ]; do
  n=$((COUNT - first)); [ "$n" -gt "$CHUNK" ] && n=$CHUNK
  products='[]'; [ "$first" -eq 0 ] && products="[$PRODUCT_JSON]"
  # Node ids as lwm2m::fleet::node_id: "86" and 13 digits, from FIRST_NODE.
  awk -v p="$PRODUCT" -v from=$((FIRST_NODE + first)) -v n="$n" -v products="$products" 'BEGIN {
    printf "{\"products\":%s,\"devices\":[", products
    for (i = 0; i < n; i++) printf "%s{\"product_id\":\"%s\",\"node_id\":\"86%013d\"}", (i ? "," : ""), p, from + i
    print "]}"
  }' >"$RUN/devices.json"
  "$FLEETGATE" --data-dir "$DATA" provision "$RUN/devices.json" >"$RUN/provision.out"
  if ! grep -q '"errors": *\[\]' "$RUN/provision.out"; then
    log "provision reported errors:"; grep -A5 '"errors"' "$RUN/provision.out" >&2; exit 1
  fi
  first=$((first + n))
  log "  $first / $COUNT provisioned ($(($(date +%s) - prov_start)) s)"
done
rm -f "$RUN/devices.json" "$RUN/provision.out"
PROVISION_SECS=$(($(date +%s) - prov_start))

# --- Server -------------------------------------------------------------------------------
wait_for_log() {
  for _ in $(seq 1200); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { log "server exited:"; tail -20 "$1" >&2; return 1; }
    sleep 0.1
  done
  log "timed out waiting for '$2' in $1"; return 1
}
stop_pid() {
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $1 ignored SIGTERM for 30 s; killing"; kill -KILL "$1" 2>/dev/null || true
}

COAP_PORT=$BASE_PORT
API_PORT=$((BASE_PORT + 1))
MQTT_PORT=$((BASE_PORT + 2))
off=()
for x in mqtts mqtt_ws coaps device_https app_mqtt; do off+=(--set "engine.$x.enabled=false"); done
"$FLEETGATE" --data-dir "$DATA" --api-listen "127.0.0.1:$API_PORT" --log-format json \
  --set "engine.mqtt.listen=127.0.0.1:$MQTT_PORT" \
  --set "engine.coap.enabled=true" --set "engine.coap.listen=127.0.0.1:$COAP_PORT" \
  --set "engine.lwm2m.awake_window_secs=$AWAKE_WINDOW" "${off[@]}" >"$RUN/server.log" 2>&1 &
pid=$!; PIDS+=("$pid")
# The watchdog takes its sleep down with it when stopped, so no stray timer outlives the run
# (and none can signal a later process that reuses the PID).
(
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep "$SERVER_LIMIT_SECS" & s=$!
  wait "$s" && kill -KILL "$pid" 2>/dev/null
) >/dev/null 2>&1 &
watchdog=$!; PIDS+=("$watchdog")
wait_for_log "$RUN/server.log" '"coap/lwm2m listening"' "$pid"
wait_for_log "$RUN/server.log" '"api listening"' "$pid"
KEY_FILE="$DATA/store/admin-api-key"
[ -f "$KEY_FILE" ] || KEY_FILE="$DATA/admin-api-key"

cat >"$RUN/scenario.toml" <<EOF
target = "127.0.0.1:$COAP_PORT"
api = "127.0.0.1:$API_PORT"
project = "loadtest"
product = "$PRODUCT"
devices = $COUNT
first_node = $FIRST_NODE
sockets = $SOCKETS
sources = $SOURCES
register_rate = $RATE
device_awake_ms = $DEVICE_AWAKE_MS
server_awake_window_secs = $AWAKE_WINDOW
settle_secs = 5
wake = $WAKE
commands_per_device = $COMMANDS
queue_rate = 40
wake_rate = 200
command_timeout_secs = 60
duration_secs = $((SERVER_LIMIT_SECS - 60))
seed = $SEED
EOF
log "server pid $pid: CoAP 127.0.0.1:$COAP_PORT, API 127.0.0.1:$API_PORT, awake window $AWAKE_WINDOW s"
mkdir -p "$RESULTS"
REPORT="$RESULTS/sleepers-$COUNT.json"
rc=0
"$LOADTEST" coap-sleepers --scenario "$RUN/scenario.toml" --server-pid "$pid" \
  --api-key-file "$KEY_FILE" --json "$REPORT" | tee "$RUN/report.txt" || rc=$?
stop_pid "$pid"
kill "$watchdog" 2>/dev/null || true
# 1 = the run finished but something was missed (reported): still a result.
[ "$rc" -le 1 ] || { log "the load test failed (exit $rc); logs in $RUN"; exit 1; }
du_data=$(du -sh "$DATA" | cut -f1)
rm -rf "$DATA"

dirty=""
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && dirty=" with uncommitted changes"
{
  echo "# Sleeping NB-IoT devices — latest run of loadtest/sleepers.sh"
  echo
  echo "- date (UTC): $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), open files $(ulimit -n)"
  echo "- fleetgate: $("$FLEETGATE" --version), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty"
  echo "- rustc: $(rustc --version)"
  echo "- scenario: COUNT=$COUNT RATE=$RATE SOCKETS=$SOCKETS SOURCES=$SOURCES AWAKE_WINDOW=$AWAKE_WINDOW DEVICE_AWAKE_MS=$DEVICE_AWAKE_MS WAKE=$WAKE COMMANDS=$COMMANDS"
  echo "- provisioning: $PROVISION_SECS s; data directory at the end: $du_data"
  echo "- exit status of the generator: $rc (0 = every device registered and hibernated, every command arrived)"
  echo
  echo '```'
  cat "$RUN/report.txt"
  echo '```'
} >"$RESULTS/sleepers-summary.md"
cat "$RESULTS/sleepers-summary.md"
log "raw report: $REPORT; logs: $RUN"
