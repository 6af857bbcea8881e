#!/usr/bin/env bash
# fleetgate next to Mosquitto and rumqttd, every scenario, in ONE run on this machine: writes
# docs/perf.md (generated, with PNG plots under docs/perf/) and the raw JSON reports under
# loadtest/results/compare/.
#
#   loadtest/compare.sh                          # everything (~17 min on 2 cores, built)
#   SMOKE=1 loadtest/compare.sh                  # tiny counts, all four servers (~3 min)
#   SERVERS="fleetgate-epoll mosquitto" SCENARIOS="telemetry" loadtest/compare.sh
#
# Installs Mosquitto (apt, when missing; as root or through sudo) and rumqttd 0.20.0 (cargo
# install into FLEETGATE_PEERS, skipped when that version is there; about 4 minutes the first
# time), builds fleetgate and fleetgate-loadtest in release and works on private copies of the
# binaries, registers the load-test devices once, then runs every scenario against every
# server, scenario by scenario: each run starts the server afresh on 127.0.0.1 on a port of
# its own, runs one `fleetgate-loadtest` subcommand against it and stops it by its PID. Then it
# draws the plots (`fleetgate-loadtest plot`) and writes the report
# (`fleetgate-loadtest perf-report`). Every server is bounded by a watchdog, every generator
# run by its own deadline and by `timeout`, everything started is stopped on exit, and nothing
# targets addresses outside 127.0.0.0/8. A run that fails against one server is recorded in the
# report as "failed: reason" and the script goes on; it exits non-zero only when it broke
# itself (install, build, provisioning, the report).
#
# Servers (SERVERS): fleetgate-epoll, fleetgate-io_uring (fleetgate's device authentication),
# mosquitto, rumqttd (user name and password from a list: client id = user name = device id).
# Scenarios (SCENARIOS), with the default plan (per server; fleetgate-only ones twice):
#   idle-connections   COUNT idle connections at IDLE_RATE/s, checkpoints, HOLD_SECS hold (~1 min)
#   idle-subscribed    the same, each session with one QoS 1 subscription               (~1 min)
#   telemetry          QoS 1, TEL_DEVICES devices, one subscriber, three runs:        (~1.7 min)
#                      (a) SAT_RATE/s for SAT_SECS (the maximum delivered rate), (b) half of
#                      each server's own maximum for TEL_SECS (latency, losses), (c) RATE/s for
#                      TEL_SECS (messages per server CPU-second)
#   reconnect-storm    STORM_COUNT devices drop and reconnect at once                  (~0.4 min)
#   command-roundtrip  fleetgate only: CMD_RATE/s sync commands for CMD_SECS           (~0.5 min)
#   coap-sleepers      fleetgate only: SLEEPERS LwM2M devices, WAKE woken with a command (~1 min)
# Duration on a 2-core machine with the build cached: the default run 17 min, SMOKE=1 about
# 3 min (4 servers, 28 runs); perf.md states the duration of the run it reports. Add about
# 4 minutes the first time for rumqttd, and the release build when it is not cached.
#
# Environment (defaults; SMOKE=1 defaults in brackets):
#   SMOKE (0)             1: tiny counts, a few seconds per scenario, OUT in a temporary directory
#   SERVERS               "fleetgate-epoll fleetgate-io_uring mosquitto rumqttd"
#   SCENARIOS             "idle-connections idle-subscribed telemetry reconnect-storm
#                         command-roundtrip coap-sleepers"
#   COUNT (19000 [400])   idle connections;  IDLE_RATE (4000 [2000]) connections/s
#   HOLD_SECS (30 [2])    idle hold once all are open
#   TEL_DEVICES (2000 [200]) telemetry devices (fleetgate allows 100 msg/s per device)
#   SAT_RATE (150000 [10000]), SAT_SECS (10 [3])   telemetry (a)
#   RATE (10000 [2000])   telemetry (c);  TEL_SECS (20 [3]) telemetry (b) and (c)
#   TEL_PROCESSES (2)     generator processes for telemetry
#   TEL_MAX_INFLIGHT ()   per-device QoS 1 window of the telemetry generator (its default if empty)
#   STORM_COUNT (10000 [300]) reconnect-storm devices
#   CMD_DEVICES (1000 [20]), CMD_RATE (1000 [50]), CMD_SECS (20 [3])   command-roundtrip
#   SLEEPERS (20000 [500]), WAKE (1000 [20])   coap-sleepers devices and woken devices
#   SOURCES (8), PROCESSES (2)   source addresses 127.0.0.2… and generator processes of the
#                         idle and reconnect-storm runs
#   BASE_PORT (20000)     first port; each run takes the next 10
#   OUT (the repository [a new temporary directory])   writes OUT/docs/perf.md, OUT/docs/perf/,
#                         OUT/loadtest/results/compare/
#   FLEETGATE_PEERS (~/.cache/fleetgate/peers)   where rumqttd is installed (bin/rumqttd)
#   CARGO_TARGET_DIR (~/.cache/fleetgate/target), BUILD_ARGS (extra `cargo build` arguments
#                         for fleetgate, e.g. "--no-default-features")
# shellcheck disable=SC2317 # cleanup and scenario_* are called indirectly (trap, by name)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleetgate/target}"
START=$(date +%s)
SMOKE="${SMOKE:-0}"
if [ "$SMOKE" = 1 ]; then
  d_count=400 d_idle_rate=2000 d_hold=2 d_tel=200 d_sat=10000 d_sat_secs=3 d_rate=2000
  d_tel_secs=3 d_storm=300 d_cmd_devices=20 d_cmd_rate=50 d_cmd_secs=3 d_sleepers=500 d_wake=20
  d_out=""
else
  d_count=19000 d_idle_rate=4000 d_hold=30 d_tel=2000 d_sat=150000 d_sat_secs=10 d_rate=10000
  d_tel_secs=20 d_storm=10000 d_cmd_devices=1000 d_cmd_rate=1000 d_cmd_secs=20 d_sleepers=20000
  d_wake=1000 d_out=$ROOT
fi
SERVERS="${SERVERS:-fleetgate-epoll fleetgate-io_uring mosquitto rumqttd}"
SCENARIOS="${SCENARIOS:-idle-connections idle-subscribed telemetry reconnect-storm command-roundtrip coap-sleepers}"
COUNT="${COUNT:-$d_count}"
IDLE_RATE="${IDLE_RATE:-$d_idle_rate}"
HOLD_SECS="${HOLD_SECS:-$d_hold}"
TEL_DEVICES="${TEL_DEVICES:-$d_tel}"
SAT_RATE="${SAT_RATE:-$d_sat}"
SAT_SECS="${SAT_SECS:-$d_sat_secs}"
RATE="${RATE:-$d_rate}"
TEL_SECS="${TEL_SECS:-$d_tel_secs}"
TEL_PROCESSES="${TEL_PROCESSES:-2}"
TEL_MAX_INFLIGHT="${TEL_MAX_INFLIGHT:-}"
STORM_COUNT="${STORM_COUNT:-$d_storm}"
CMD_DEVICES="${CMD_DEVICES:-$d_cmd_devices}"
CMD_RATE="${CMD_RATE:-$d_cmd_rate}"
CMD_SECS="${CMD_SECS:-$d_cmd_secs}"
SLEEPERS="${SLEEPERS:-$d_sleepers}"
WAKE="${WAKE:-$d_wake}"
BASE_PORT="${BASE_PORT:-20000}"
PEERS="${FLEETGATE_PEERS:-$HOME/.cache/fleetgate/peers}"
RUMQTTD_VERSION=0.20.0
SOURCES="${SOURCES:-8}"
PROCESSES="${PROCESSES:-2}"
SEED=1
if [ "$SMOKE" = 1 ]; then
  AWAKE_WINDOW=2 SETTLE=1 SERVER_LIMIT_SECS=300 DRAIN=3 STORM_TIMEOUT=20
else
  AWAKE_WINDOW=5 SETTLE=3 SERVER_LIMIT_SECS=1200 DRAIN=10 STORM_TIMEOUT=60
fi
RUN=$(mktemp -d /tmp/fleetgate-compare.XXXXXX)
OUT="${OUT:-${d_out:-$(mktemp -d /tmp/fleetgate-compare-out.XXXXXX)}}"
DOC="$OUT/docs/perf.md"
PLOTS="$OUT/docs/perf"
RESULTS="$OUT/loadtest/results/compare"

log() { printf '[compare %s] %s\n' "$(date +%T)" "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
has() { [[ " $1 " == *" $2 "* ]]; }
# json_str TEXT: TEXT as a JSON string.
json_str() {
  local s
  s=$(printf '%s' "$1" | tr -d '\000-\010\013-\037')
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/\\t}
  printf '"%s"' "$s"
}

for s in $SERVERS; do
  case $s in fleetgate-epoll | fleetgate-io_uring | mosquitto | rumqttd) ;; *) log "unknown server $s"; exit 2 ;; esac
done
for s in $SCENARIOS; do
  case $s in idle-connections | idle-subscribed | telemetry | reconnect-storm | command-roundtrip | coap-sleepers) ;;
    *) log "unknown scenario $s"; exit 2 ;;
  esac
done
if [ $((SAT_RATE / TEL_DEVICES)) -ge 100 ]; then
  log "warning: SAT_RATE / TEL_DEVICES >= 100: fleetgate's per-device limit (100 msg/s) would be what limits"
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FILES=$(ulimit -n)
[[ $FILES =~ ^[0-9]+$ ]] || FILES=20000

# PIDs this script started, stopped on exit whatever happens.
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

# --- Peers --------------------------------------------------------------------------------
MOSQUITTO="" MOSQUITTO_PASSWD="" RUMQTTD=""
if has "$SERVERS" mosquitto; then
  MOSQUITTO=$(command -v mosquitto || true)
  [ -z "$MOSQUITTO" ] && [ -x /usr/sbin/mosquitto ] && MOSQUITTO=/usr/sbin/mosquitto
  if [ -z "$MOSQUITTO" ] || ! command -v mosquitto_passwd >/dev/null; then
    log "installing mosquitto (apt)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto >/dev/null \
      || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto >/dev/null; }
    MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  fi
  MOSQUITTO_PASSWD=$(command -v mosquitto_passwd)
fi
if has "$SERVERS" rumqttd; then
  RUMQTTD="$PEERS/bin/rumqttd"
  if [ "$("$RUMQTTD" --version 2>/dev/null || true)" != "rumqttd $RUMQTTD_VERSION" ]; then
    # Not --locked: the metrics 0.22.1 of rumqttd 0.20.0's lock file no longer compiles with
    # current rustc (E0521); cargo resolves the newest compatible dependencies instead.
    log "installing rumqttd $RUMQTTD_VERSION into $PEERS (cargo install, about 4 minutes)"
    CARGO_TARGET_DIR="$PEERS/build" cargo install rumqttd --version "$RUMQTTD_VERSION" --root "$PEERS" \
      >"$RUN/rumqttd-install.log" 2>&1 || { tail -20 "$RUN/rumqttd-install.log" >&2; exit 1; }
  fi
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

rm -rf "$RESULTS"
mkdir -p "$RESULTS" "$PLOTS"

# --- Devices ------------------------------------------------------------------------------
N=$COUNT
for n in "$STORM_COUNT" "$TEL_DEVICES" "$CMD_DEVICES"; do [ "$n" -gt "$N" ] && N=$n; done
log "registering $N devices of product lt (seed $SEED)"
"$LOADTEST" credentials --count "$N" --product lt --seed "$SEED" --out "$RUN/devices.json" --passwords "$RUN/passwords.txt"

# provision DATA FILE: `fleetgate provision`, failing on any reported error.
provision() {
  "$FLEETGATE" --data-dir "$1" provision "$2" >"$RUN/provision.out"
  grep -q '"errors": *\[\]' "$RUN/provision.out" || { log "provision reported errors:"; head -c 2000 "$RUN/provision.out" >&2; return 1; }
}
TEMPLATE="$RUN/template-mqtt"
SLEEPERS_TEMPLATE="$RUN/template-coap"
if [[ $SERVERS == *fleetgate* ]]; then
  provision "$TEMPLATE" "$RUN/devices.json"
  if has "$SCENARIOS" coap-sleepers; then
    log "registering $SLEEPERS LwM2M devices of product nbwm"
    # The product of sleepers.sh (and of sleepers::product_json); devices without a secret.
    product='{"product_id":"nbwm","app_id":"default","name":"nb-water-meter","protocol_type":"CoAP","data_format":"binary","codec":"watermeter-v1","device_type":"WaterMeter","service_capabilities":[{"service_id":"WaterMeter","properties":[{"property_name":"battery_level","data_type":"int","required":false,"min":"0","max":"100","method":"R"},{"property_name":"signal_strength","data_type":"int","required":false,"min":"-140","max":"0","method":"R"},{"property_name":"meter_reading","data_type":"int","required":false,"min":"0","max":"4294967295","method":"R"},{"property_name":"valve","data_type":"string","required":false,"enum_list":["OPEN","CLOSED"],"method":"R"}],"commands":[{"command_name":"SET_VALVE","paras":[{"para_name":"valve","data_type":"string","required":true,"enum_list":["OPEN","CLOSED"]}]},{"command_name":"SET_INTERVAL","paras":[{"para_name":"interval","data_type":"int","required":true,"min":"60","max":"86400"}]}]}]}'
    awk -v n="$SLEEPERS" -v product="$product" 'BEGIN {
      printf "{\"products\":[%s],\"devices\":[", product
      for (i = 1; i <= n; i++) printf "%s{\"product_id\":\"nbwm\",\"node_id\":\"86%013d\"}", (i > 1 ? "," : ""), i
      print "]}"
    }' >"$RUN/sleepers.json"
    provision "$SLEEPERS_TEMPLATE" "$RUN/sleepers.json"
  fi
fi
if [ -n "$MOSQUITTO" ]; then
  cp "$RUN/passwords.txt" "$RUN/mosquitto.passwd"
  "$MOSQUITTO_PASSWD" -U "$RUN/mosquitto.passwd"
fi

# --- Servers ------------------------------------------------------------------------------
# mosquitto_conf PORT PASSWORD_FILE
mosquitto_conf() {
  cat <<EOF
listener $1 127.0.0.1
allow_anonymous false
password_file $2
persistence false
max_connections -1
# No drop below any backlog a run reaches, and fleetgate's in-flight window (see perf.md).
max_queued_messages 0
max_inflight_messages 32
# fleetgate sets TCP_NODELAY on its connections too.
set_tcp_nodelay true
log_dest stdout
log_type error
log_type warning
connection_messages false
user $(id -un)
EOF
}

# rumqttd_conf PORT
rumqttd_conf() {
  cat <<EOF
id = 0

[router]
id = 0
# Below the open-file limit: at EMFILE rumqttd logs in a tight loop.
max_connections = $((FILES - 500))
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:$1"
# The default 1 ms caps accepts near 1,000/s.
next_connection_delay_ms = 0

[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 20480
max_inflight_count = 100
dynamic_filters = true
EOF
}

# FG_ARGS for fleetgate on a scenario of KIND (mqtt | api | coap): fleetgate_args KIND DRIVER
# DATA_DIR PORT. MQTT (or CoAP) on PORT, the API on PORT+1.
fleetgate_args() {
  local kind=$1 driver=$2 data=$3 port=$4 x
  FG_ARGS=(--data-dir "$data" --api-listen "127.0.0.1:$((port + 1))" --log-format json --set "engine.driver=$driver")
  for x in mqtts mqtt_ws coaps device_https app_mqtt; do FG_ARGS+=(--set "engine.$x.enabled=false"); done
  if [ "$kind" = coap ]; then
    FG_ARGS+=(--set engine.mqtt.enabled=false --set engine.coap.enabled=true --set "engine.coap.listen=127.0.0.1:$port"
      --set "engine.lwm2m.awake_window_secs=$AWAKE_WINDOW")
  else
    FG_ARGS+=(--set engine.coap.enabled=false --set "engine.mqtt.listen=127.0.0.1:$port"
      --set engine.session.max_queued_messages=1000000)
  fi
  if [ "$kind" = api ]; then
    FG_ARGS+=(--set api.rate_limit.calls_per_sec=0 --set api.rate_limit.downlinks_per_sec=0)
  fi
}

# wait_for_log FILE PATTERN PID: until FILE contains PATTERN (60 s at most, while PID lives).
wait_for_log() {
  local _
  for _ in $(seq 600); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# wait_for_port PORT PID: until 127.0.0.1:PORT accepts a connection (60 s at most, while PID
# lives).
wait_for_port() {
  local _
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# stop_pid PID: SIGTERM, then SIGKILL after 30 s.
stop_pid() {
  local _
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 300); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $1 ignored SIGTERM for 30 s; killing"; kill -KILL "$1" 2>/dev/null || true
}

# start_server NAME KIND DIR PORT: starts NAME for a scenario of KIND with a watchdog; sets
# SERVER_PID, WATCHDOG_PID and (fleetgate) KEY_FILE. Fails when the server does not come up.
start_server() {
  local name=$1 kind=$2 dir=$3 port=$4
  SERVER_PID="" WATCHDOG_PID="" KEY_FILE=""
  mkdir -p "$dir"
  case $name in
    fleetgate-*)
      local template=$TEMPLATE
      [ "$kind" = coap ] && template=$SLEEPERS_TEMPLATE
      cp -a "$template" "$dir/data" || return 1
      fleetgate_args "$kind" "${name#fleetgate-}" "$dir/data" "$port"
      "$FLEETGATE" "${FG_ARGS[@]}" >"$dir/server.log" 2>&1 &
      SERVER_PID=$!; PIDS+=("$SERVER_PID")
      ;;
    mosquitto)
      mosquitto_conf "$port" "$RUN/mosquitto.passwd" >"$dir/mosquitto.conf"
      "$MOSQUITTO" -c "$dir/mosquitto.conf" >"$dir/server.log" 2>&1 &
      SERVER_PID=$!; PIDS+=("$SERVER_PID")
      ;;
    rumqttd)
      { rumqttd_conf "$port"; printf '\n[v4.1.connections.auth]\n'; awk -F: '{ printf "%s = \"%s\"\n", $1, $2 }' "$RUN/passwords.txt"; } >"$dir/rumqttd.toml"
      "$RUMQTTD" -q -c "$dir/rumqttd.toml" >"$dir/server.log" 2>&1 &
      SERVER_PID=$!; PIDS+=("$SERVER_PID")
      ;;
  esac
  # The watchdog takes its sleep down with it when stopped, so no stray timer outlives the run
  # (and none can signal a later process that reuses the PID).
  local pid=$SERVER_PID
  (
    trap 'kill "$s" 2>/dev/null; exit 0' TERM
    sleep "$SERVER_LIMIT_SECS" & s=$!
    wait "$s" && kill -KILL "$pid" 2>/dev/null
  ) >/dev/null 2>&1 &
  WATCHDOG_PID=$!; PIDS+=("$WATCHDOG_PID")
  case $name in
    fleetgate-*)
      if [ "$kind" = coap ]; then
        wait_for_log "$dir/server.log" '"coap/lwm2m listening"' "$SERVER_PID" || return 1
      else
        wait_for_log "$dir/server.log" '"mqtt listening"' "$SERVER_PID" || return 1
      fi
      wait_for_log "$dir/server.log" '"api listening"' "$SERVER_PID" || return 1
      KEY_FILE="$dir/data/store/admin-api-key"
      [ -f "$KEY_FILE" ] || KEY_FILE="$dir/data/admin-api-key"
      ;;
    *) wait_for_port "$port" "$SERVER_PID" || return 1 ;;
  esac
}

stop_server() {
  [ -n "$SERVER_PID" ] && stop_pid "$SERVER_PID"
  [ -n "$WATCHDOG_PID" ] && { kill "$WATCHDOG_PID" 2>/dev/null || true; }
  SERVER_PID="" WATCHDOG_PID=""
}

# --- Scenario files -----------------------------------------------------------------------
# scenario_VARIANT SERVER PORT: prints the scenario file and sets LIMIT, the seconds the
# generator gets before `timeout` stops it (beyond its own deadline).
auth_of() { case $1 in fleetgate-*) echo device ;; *) echo password ;; esac; }
# topic_root_of SERVER: the first topic level. rumqttd 0.20.0 refuses filters beginning with `$`
# (InvalidFilterPrefix), so its devices use `oc/devices/…`; everyone else uses fleetgate's `$oc`.
topic_root_of() { case $1 in rumqttd) echo oc ;; *) echo '$oc' ;; esac; }

idle_scenario() { # SERVER PORT SUBSCRIBE
  local checkpoints="2000, 5000, 10000, 15000, $COUNT"
  [ "$COUNT" -le 15000 ] && checkpoints="$((COUNT / 4)), $((COUNT / 2)), $((COUNT * 3 / 4)), $COUNT"
  cat <<EOF
target = "127.0.0.1:$2"
product = "lt"
seed = $SEED
count = $COUNT
rate = $IDLE_RATE
sources = $SOURCES
processes = $PROCESSES
keepalive_secs = 300
hold_secs = $HOLD_SECS
checkpoints = [$checkpoints]
connect_timeout_secs = 10
settle_secs = $SETTLE
slope_from = $(echo "$checkpoints" | cut -d, -f2 | tr -d ' ')
auth = "$(auth_of "$1")"
topic_root = "$(topic_root_of "$1")"
EOF
  [ "$3" = 1 ] && echo "subscribe = true"
  LIMIT=$((2 * COUNT / IDLE_RATE + 6 * SETTLE + HOLD_SECS + 120))
}
scenario_idle_connections() { idle_scenario "$1" "$2" 0; }
scenario_idle_subscribed() { idle_scenario "$1" "$2" 1; }

telemetry_scenario() { # SERVER PORT RATE SECS DRAIN
  cat <<EOF
target = "127.0.0.1:$2"
product = "lt"
seed = $SEED
count = $TEL_DEVICES
rate = $3
qos = 1
duration_secs = $4
drain_secs = $5
connect_rate = 2000
sources = $SOURCES
keepalive_secs = 60
connect_timeout_secs = 10
auth = "$(auth_of "$1")"
topic_root = "$(topic_root_of "$1")"
processes = $TEL_PROCESSES
EOF
  [ -n "$TEL_MAX_INFLIGHT" ] && echo "max_inflight = $TEL_MAX_INFLIGHT"
  LIMIT=$((2 * TEL_DEVICES / 2000 + 2 * $4 + $5 + 120))
}
scenario_telemetry_saturation() { telemetry_scenario "$1" "$2" "$SAT_RATE" "$SAT_SECS" "$DRAIN"; }
scenario_telemetry_half() { telemetry_scenario "$1" "$2" "$HALF_RATE" "$TEL_SECS" "$DRAIN"; }
scenario_telemetry_fixed() { telemetry_scenario "$1" "$2" "$RATE" "$TEL_SECS" "$DRAIN"; }

scenario_reconnect_storm() {
  local rate=4000
  [ "$SMOKE" = 1 ] && rate=2000
  cat <<EOF
target = "127.0.0.1:$2"
product = "lt"
seed = $SEED
count = $STORM_COUNT
rate = $rate
sources = $SOURCES
processes = $PROCESSES
keepalive_secs = 300
hold_secs = $((SETTLE + 2))
connect_timeout_secs = 10
auth = "$(auth_of "$1")"
max_inflight = 1000
storm_timeout_secs = $STORM_TIMEOUT
retry_delay_ms = 100
hold_after_secs = 2
EOF
  LIMIT=$((2 * STORM_COUNT / rate + STORM_TIMEOUT + 150))
}

scenario_command_roundtrip() {
  cat <<EOF
target = "127.0.0.1:$2"
api = "127.0.0.1:$(($2 + 1))"
project = "loadtest"
product = "lt"
seed = $SEED
count = $CMD_DEVICES
rate = $CMD_RATE
concurrency = $([ "$SMOKE" = 1 ] && echo 4 || echo 32)
duration_secs = $CMD_SECS
request_timeout_secs = 30
command_qos = 1
connect_rate = 2000
sources = $SOURCES
keepalive_secs = 60
connect_timeout_secs = 10
EOF
  LIMIT=$((2 * CMD_SECS + 180))
}

scenario_coap_sleepers() {
  local rate=1800 sockets=15000 duration
  [ "$SMOKE" = 1 ] && rate=500 sockets=2000
  duration=$((2 * SLEEPERS / rate + 4 * AWAKE_WINDOW + WAKE / 40 + 300))
  cat <<EOF
target = "127.0.0.1:$2"
api = "127.0.0.1:$(($2 + 1))"
project = "loadtest"
product = "nbwm"
devices = $SLEEPERS
first_node = 1
sockets = $sockets
sources = $SOURCES
register_rate = $rate
device_awake_ms = 1000
server_awake_window_secs = $AWAKE_WINDOW
settle_secs = $((SETTLE + 2))
wake = $WAKE
commands_per_device = 1
queue_rate = 40
wake_rate = 200
command_timeout_secs = 60
duration_secs = $duration
seed = $SEED
EOF
  LIMIT=$((duration + 60))
}

# --- Runs ---------------------------------------------------------------------------------
RUNS=()
NEXT_PORT=$BASE_PORT
# record VARIANT SERVER STATUS REASON [COMMAND]: one entry of the run-info file.
record() {
  local base="$1-$2" report=null scenario=null
  [ -f "$RESULTS/$base.json" ] && report=$(json_str "$base.json")
  [ -f "$RESULTS/$base.toml" ] && scenario=$(json_str "$base.toml")
  RUNS+=("{\"variant\":$(json_str "$1"),\"server\":$(json_str "$2"),\"status\":$(json_str "$3"),\"reason\":$(json_str "$4"),\"report\":$report,\"scenario_file\":$scenario,\"command\":$(json_str "${5:-}")}")
  log "$1 × $2: $3${4:+: $4}"
}

# last_error FILE: the last line of FILE that is not progress, at most 300 characters.
last_error() {
  sed 's/\x1b\[[0-9;]*m//g' "$1" 2>/dev/null | grep -v '^ *…\|^\s*$\|━\|connected\b.*/\|sent,' | tail -1 | cut -c1-300 || true
}

# run_case VARIANT SERVER SUBCOMMAND KIND: writes the scenario file, starts the server, runs the
# generator, stops the server and records the outcome.
run_case() {
  local variant=$1 server=$2 sub=$3 kind=$4
  local base="$variant-$server" dir="$RUN/$variant-$server" port=$NEXT_PORT
  NEXT_PORT=$((NEXT_PORT + 10))
  local cmd="fleetgate-loadtest $sub --scenario $base.toml --server-pid PID --json $base.json"
  [ "$kind" = mqtt ] || cmd+=" --api-key-file DATA_DIR/store/admin-api-key"
  log "$variant × $server on 127.0.0.1:$port"
  if ! start_server "$server" "$kind" "$dir" "$port"; then
    record "$variant" "$server" failed "the server did not start: $(last_error "$dir/server.log")" "$cmd"
    stop_server
    return 0
  fi
  LIMIT=600
  "scenario_${variant//-/_}" "$server" "$port" >"$RESULTS/$base.toml"
  local extra=()
  [ -n "$KEY_FILE" ] && [ "$kind" != mqtt ] && extra=(--api-key-file "$KEY_FILE")
  local rc=0
  timeout --kill-after=10 "$LIMIT" "$LOADTEST" "$sub" --scenario "$RESULTS/$base.toml" --server-pid "$SERVER_PID" \
    --json "$RESULTS/$base.json" "${extra[@]}" >"$dir/generator.out" 2>"$dir/generator.err" || rc=$?
  local alive=1
  kill -0 "$SERVER_PID" 2>/dev/null || alive=0
  stop_server
  rm -rf "$dir/data"
  sed 's/^/    /' "$dir/generator.out" >&2
  local status reason=""
  if [ "$rc" -eq 0 ] && [ -f "$RESULTS/$base.json" ]; then
    status=ok
  elif [ "$rc" -eq 1 ] && [ -f "$RESULTS/$base.json" ]; then
    status=incomplete
  else
    status=failed
    rm -f "$RESULTS/$base.json"
    case $rc in
      124 | 137) reason="the generator was stopped after $LIMIT s" ;;
      *) reason="exit $rc: $(last_error "$dir/generator.err")" ;;
    esac
  fi
  if [ "$alive" = 0 ]; then
    reason="the server exited during the run (${reason:-its log: $(last_error "$dir/server.log")})"
  fi
  record "$variant" "$server" "$status" "$reason" "$cmd"
}

# plot VARIANT: the variant's charts.
plot() {
  local variant=$1 args=() s
  rm -f "$PLOTS/$variant"-*.png
  for s in $SERVERS; do
    [ -f "$RESULTS/$variant-$s.json" ] && args+=("$s=$RESULTS/$variant-$s.json")
  done
  [ "${#args[@]}" -gt 0 ] || return 0
  "$LOADTEST" plot --out-dir "$PLOTS" --prefix "$variant" "${args[@]}" >"$RUN/plot-$variant.out" 2>&1 \
    || log "plot $variant failed (not fatal): $(tail -1 "$RUN/plot-$variant.out")"
}

# delivered_rate REPORT: the delivered rate of a telemetry report, whole messages/s.
delivered_rate() {
  { grep -o '"delivered_per_sec": *[0-9.eE+-]*' "$1" 2>/dev/null || true; } | head -1 | sed 's/.*: *//' | awk '{ printf "%d", $1 }'
}

# variant VARIANT SUBCOMMAND KIND [fleetgate-only]: the variant against every server.
variant() {
  local v=$1 sub=$2 kind=$3 only=${4:-} s
  for s in $SERVERS; do
    if [ -n "$only" ] && [[ $s != fleetgate-* ]]; then
      record "$v" "$s" not-applicable "$only"
    else
      run_case "$v" "$s" "$sub" "$kind"
    fi
  done
  plot "$v"
}

for scenario in $SCENARIOS; do
  case $scenario in
    idle-connections) variant idle-connections idle-connections mqtt ;;
    idle-subscribed) variant idle-subscribed idle-connections mqtt ;;
    telemetry)
      variant telemetry-saturation telemetry mqtt
      for s in $SERVERS; do
        max=$(delivered_rate "$RESULTS/telemetry-saturation-$s.json")
        if [ -n "$max" ] && [ "$max" -ge 2 ]; then
          HALF_RATE=$((max / 2))
          run_case telemetry-half "$s" telemetry mqtt
        else
          record telemetry-half "$s" failed "no maximum delivered rate from (a)"
        fi
      done
      plot telemetry-half
      variant telemetry-fixed telemetry mqtt
      ;;
    reconnect-storm) variant reconnect-storm reconnect-storm mqtt ;;
    command-roundtrip) variant command-roundtrip command-roundtrip api "the peers have no device-command API" ;;
    coap-sleepers) variant coap-sleepers coap-sleepers coap "the peers do not speak CoAP/LwM2M" ;;
  esac
done

# --- Report -------------------------------------------------------------------------------
configs=()
if [ -n "$MOSQUITTO" ]; then
  mosquitto_conf PORT PASSWORD_FILE >"$RESULTS/mosquitto.conf"
  configs+=("\"mosquitto\":\"mosquitto.conf\"")
fi
if [ -n "$RUMQTTD" ]; then
  { rumqttd_conf PORT; printf '\n[v4.1.connections.auth]\n# one line per device: lt_n000000 = "its secret", …\n'; } >"$RESULTS/rumqttd.toml"
  configs+=("\"rumqttd\":\"rumqttd.toml\"")
fi
commands=()
if [[ $SERVERS == *fleetgate* ]]; then
  for kind in mqtt api coap; do
    fleetgate_args "$kind" DRIVER DATA_DIR 0
    line="fleetgate ${FG_ARGS[*]}"
    line=${line//127.0.0.1:0/127.0.0.1:PORT}
    line=${line//127.0.0.1:1/127.0.0.1:PORT+1}
    case $kind in
      mqtt) key="fleetgate, MQTT scenarios" ;;
      api) key="fleetgate, command-roundtrip" ;;
      coap) key="fleetgate, coap-sleepers" ;;
    esac
    file=devices.json
    [ "$kind" = coap ] && file="sleepers.json (product nbwm, devices without secrets, as sleepers.sh)"
    commands+=("$(json_str "$key"):$(json_str "fleetgate --data-dir DATA_DIR provision $file
$line")")
  done
fi
[ -n "$MOSQUITTO" ] && commands+=("\"mosquitto\":$(json_str "mosquitto_passwd -U PASSWORD_FILE
mosquitto -c mosquitto.conf")")
[ -n "$RUMQTTD" ] && commands+=("\"rumqttd\":$(json_str "rumqttd -q -c rumqttd.toml")")

dirty=""
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && dirty=" with uncommitted changes"
settings=()
for v in SERVERS SCENARIOS COUNT IDLE_RATE HOLD_SECS TEL_DEVICES SAT_RATE SAT_SECS RATE TEL_SECS TEL_PROCESSES \
  TEL_MAX_INFLIGHT STORM_COUNT CMD_DEVICES CMD_RATE CMD_SECS SLEEPERS WAKE SOURCES PROCESSES BUILD_ARGS; do
  [ -n "${!v:-}" ] && settings+=("$(json_str "$v=${!v}")")
done
servers=()
for s in $SERVERS; do servers+=("$(json_str "$s")"); done
join() { local IFS=,; echo "$*"; }
rumqttd_version=""
[ -n "$RUMQTTD" ] && rumqttd_version="$("$RUMQTTD" --version | sed 's/^rumqttd //') (cargo install, dependencies resolved at install time)"
mosquitto_version=""
if [ -n "$MOSQUITTO" ]; then mosquitto_version=$({ "$MOSQUITTO" -h 2>/dev/null || true; } | head -1); fi
command="loadtest/compare.sh"
[ "$SMOKE" = 1 ] && command="SMOKE=1 $command"
cat >"$RESULTS/run-info.json" <<EOF
{
  "date": $(json_str "$(date -u -d "@$START" +%Y-%m-%dT%H:%MZ)"),
  "duration_secs": $(($(date +%s) - START)),
  "smoke": $([ "$SMOKE" = 1 ] && echo true || echo false),
  "command": $(json_str "$command"),
  "settings": [$(join "${settings[@]}")],
  "machine": {
    "cores": $(nproc),
    "cpu": $(json_str "$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//' || true)"),
    "memory_kib": $(awk '/MemTotal/ { print $2 }' /proc/meminfo),
    "kernel": $(json_str "$(uname -r)"),
    "open_files": $(json_str "$FILES")
  },
  "versions": {
    "fleetgate": $(json_str "$("$FLEETGATE" --version)"),
    "commit": $(json_str "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$dirty${BUILD_ARGS:+, built with $BUILD_ARGS}"),
    "mosquitto": $(json_str "$mosquitto_version"),
    "rumqttd": $(json_str "$rumqttd_version"),
    "rustc": $(json_str "$(rustc --version)")
  },
  "servers": [$(join "${servers[@]}")],
  "server_commands": {$(join "${commands[@]}")},
  "server_configs": {$(join "${configs[@]}")},
  "runs": [
$(join "${RUNS[@]}" | sed 's/},{/},\n{/g')
  ]
}
EOF
"$LOADTEST" perf-report --run-info "$RESULTS/run-info.json" --out "$DOC" --plots "$PLOTS"
log "took $(( $(date +%s) - START )) s; report: $DOC; raw reports: $RESULTS; logs: $RUN"
# Outside the repository (SMOKE=1, OUT=…) nobody else will read it: print it.
[ "$(cd "$OUT" && pwd)" = "$ROOT" ] || cat "$DOC"
exit 0
