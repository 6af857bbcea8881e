#!/usr/bin/env bash
# Server memory per idle, authenticated MQTT session: fleetgate on epoll, fleetgate on io_uring
# and Mosquitto, measured in ONE run on this machine with the same generator and clients.
#
#   loadtest/compare-idle.sh            # 19,000 connections each (about 4 minutes)
#   COUNT=5000 HOLD_SECS=5 loadtest/compare-idle.sh     # a quick look
#   SERVERS="fleetgate-epoll mosquitto rumqttd" loadtest/compare-idle.sh
#
# A thin wrapper: loadtest/compare.sh with SCENARIOS=idle-connections (see there for how the
# servers are installed, started, bounded and stopped). Unless OUT is given, its report and
# JSON reports go to a new temporary directory (OUT/docs/perf.md, OUT/loadtest/results/compare/)
# and the report is printed, so docs/perf.md is left alone.
#
# Environment: COUNT (19000), RATE (4000 connections/s), HOLD_SECS (30), SOURCES (8),
# PROCESSES (2), SERVERS ("fleetgate-epoll fleetgate-io_uring mosquitto"), BASE_PORT (18830),
# OUT (a new temporary directory), CARGO_TARGET_DIR (~/.cache/fleetgate/target), BUILD_ARGS
# (extra `cargo build` arguments for fleetgate, e.g. "--no-default-features" for the system
# allocator).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fleetgate/target}"
export SCENARIOS=idle-connections
export SERVERS="${SERVERS:-fleetgate-epoll fleetgate-io_uring mosquitto}"
export IDLE_RATE="${RATE:-4000}"
export BASE_PORT="${BASE_PORT:-18830}"
export OUT="${OUT:-$(mktemp -d /tmp/fleetgate-compare-idle.XXXXXX)}"
# RATE means the telemetry rate to compare.sh.
unset RATE
exec loadtest/compare.sh
