#!/usr/bin/env bash
# TLS next to plain TCP, IoTD next to Mosquitto, in one run (make bench-tls): connection rate
# (2,000 connections, 64 at a time) and QoS 0 fan-in (10 publishers, 1 subscriber). Needs
# openssl and Debian's mosquitto. Certificates are made for the run (ECDSA P-256) and deleted.
set -euo pipefail
cd "$(dirname "$0")/../.."
CONNS=${CONNS:-2000}
DURATION=${DURATION:-5s}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/iotd" ./cmd/iotd
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 1 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 1 -extfile ext 2>/dev/null
cat > mosquitto.conf <<CONF
user $(id -un)
allow_anonymous true
persistence false
max_inflight_messages 0
max_queued_messages 1000000
connection_messages false
log_type error
listener 18883 127.0.0.1
cafile $work/ca.crt
certfile $work/server.crt
keyfile $work/server.key
listener 18884 127.0.0.1
CONF
cat > iotd.toml <<CONF
[[listener]]
name = "tls"
type = "tls"
address = "127.0.0.1:18893"
cert_file = "$work/server.crt"
key_file = "$work/server.key"
[[listener]]
name = "tcp"
address = "127.0.0.1:18894"
[store]
backend = "memory"
CONF
mosq=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$mosq" -c mosquitto.conf > mosquitto.log 2>&1 &
./iotd -c iotd.toml > iotd.log 2>&1 &
for port in 18883 18893; do
	for _ in $(seq 1 100); do ./iotd bench conn -p "$port" --cafile ca.crt -c 1 --duration 10ms --quiet > /dev/null 2>&1 && break; sleep 0.1; done
done
printf '%-15s %14s %16s %22s\n' broker transport "connections/s" "QoS 0 fan-in msg/s"
for row in "mosquitto tls 18883 --cafile ca.crt" "iotd tls 18893 --cafile ca.crt" "mosquitto tcp 18884" "iotd tcp 18894"; do
	set -- $row
	name=$1 transport=$2 port=$3
	shift 3
	conn=$(./iotd bench conn -p "$port" -c "$CONNS" --duration 1s --quiet "$@" 2>&1 | awk '/connected/ {for (i = 1; i <= NF; i++) if ($i ~ /\/s,?$/) {sub(/,$/, "", $i); print $i}}' | head -1)
	fan=$(./iotd bench scenario -p "$port" --pubs 10 --subs 1 --qos 0 --duration "$DURATION" --quiet "$@" 2>&1 | awk '/received/ {for (i = 1; i <= NF; i++) if ($i == "msg/s") print $(i-1)}' | head -1)
	printf '%-15s %14s %16s %22s\n' "$name" "$transport" "${conn:-?}" "${fan:-?}"
done
