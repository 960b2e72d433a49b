// Package integration holds IoTD's end-to-end tests: they start the broker and server (or the real
// iotd binary) on 127.0.0.1 and drive them over real sockets with third-party clients, the Eclipse
// Paho Go client and Debian's mosquitto_pub and mosquitto_sub, plus IoTD's raw test client where
// neither can express a case (garbage on the wire, a silent connection).
//
// The package has no code of its own; everything is in _test.go files. The mosquitto tests skip
// when the binaries are missing; .ci/run installs them. Tests that prove a normative statement carry
// its identifier (for example MQTT-3.1.4-2) in their name.
package integration
