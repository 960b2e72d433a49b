#!/usr/bin/env bash
# QoS 1 fan-in through persistent sessions, per store backend and fsync policy, next to the
# in-memory store, in one run (make bench-store). Ten persistent publishers, one persistent
# subscriber that acknowledges everything; every message is stored for the subscriber and
# deleted when it acknowledges. Prints one line per configuration.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-5s}
PUBS=${PUBS:-10}
PORT=${PORT:-18990}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/iotd" ./cmd/iotd
printf '%-16s %12s %12s\n' "store" "msg/s" "p99"
for cfg in memory file:always file:interval file:never sqlite:always sqlite:interval sqlite:never; do
	backend=${cfg%%:*}
	fsync=${cfg#*:}
	[ "$backend" = memory ] && fsync=always
	printf '[store]\nbackend = "%s"\nfsync = "%s"\n' "$backend" "$fsync" > "$work/iotd.toml"
	rm -rf "$work/data"
	"$work/iotd" -c "$work/iotd.toml" --listen "127.0.0.1:$PORT" --data-dir "$work/data" > "$work/iotd.log" 2>&1 &
	pid=$!
	for _ in $(seq 1 100); do "$work/iotd" bench conn -p "$PORT" -c 1 --duration 10ms --quiet > /dev/null 2>&1 && break; sleep 0.1; done
	out=$("$work/iotd" bench scenario -p "$PORT" --pubs "$PUBS" --subs 1 --qos 1 --persistent --duration "$DURATION" --quiet 2>&1 || true)
	kill -INT "$pid"; wait "$pid" || true
	rate=$(echo "$out" | awk '/received/ {for (i = 1; i <= NF; i++) if ($i == "msg/s") print $(i-1)}' | head -1)
	p99=$(echo "$out" | awk '/ p90 / {for (i = 1; i <= NF; i++) if ($i == "p99") print $(i+1)}' | head -1)
	printf '%-16s %12s %12s\n' "$cfg" "${rate:-?}" "${p99:-?}"
done
