package integration

import (
	"testing"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/server"
)

// TestQoS0Routing publishes with one client kind to a subscriber of the other kind and checks what
// arrives, for exact filters, both wildcards and topics starting with '$'.
func TestQoS0Routing(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		filter string
		topic  string
		match  bool
	}{
		{name: "MQTT-3.3.2-3 exact topic", filter: "home/kitchen/temp", topic: "home/kitchen/temp", match: true},
		{name: "exact filter does not match another topic", filter: "home/kitchen/temp", topic: "home/kitchen/hum"},
		{name: "MQTT-4.7.1-3 plus matches one level", filter: "home/+/temp", topic: "home/kitchen/temp", match: true},
		{name: "MQTT-4.7.1-3 plus does not span levels", filter: "home/+", topic: "home/kitchen/temp"},
		{name: "MQTT-4.7.1-2 hash matches every level below", filter: "home/#", topic: "home/kitchen/temp", match: true},
		{name: "MQTT-4.7.1-2 hash matches the parent level", filter: "home/#", topic: "home", match: true},
		{name: "MQTT-4.7.2-1 hash does not match $SYS", filter: "#", topic: "$SYS/broker/uptime"},
		{name: "MQTT-4.7.2-1 plus does not match $SYS", filter: "+/broker/uptime", topic: "$SYS/broker/uptime"},
		{name: "MQTT-4.7.2-1 literal $SYS level matches", filter: "$SYS/#", topic: "$SYS/broker/uptime", match: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			forEachKind(t, func(t *testing.T, k kind) {
				env := iotdtest.Start(t, server.Options{}, broker.Options{})
				sub := k.subscribe(t, env, subSpec{filters: []string{tc.filter}})
				k.other().publish(t, env, msg{Topic: tc.topic, Payload: "21.5"})
				if tc.match {
					expect(t, sub, msg{Topic: tc.topic, Payload: "21.5"})
				}
				expectNone(t, env, sub)
			})
		})
	}
}

// TestFanOut checks that one message reaches every matching subscriber of both kinds, once, and
// none of the others.
func TestFanOut(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, publisher kind) {
		needMosquitto(t) // the subscribers are of both kinds
		env := iotdtest.Start(t, server.Options{}, broker.Options{})
		matching := []receiver{
			pahoSubscribe(t, env, subSpec{filters: []string{"fan/+"}}),
			pahoSubscribe(t, env, subSpec{filters: []string{"fan/#"}}),
			mosqSubscribe(t, env, subSpec{filters: []string{"fan/x"}}),
			mosqSubscribe(t, env, subSpec{filters: []string{"+/x"}}),
		}
		others := []receiver{
			pahoSubscribe(t, env, subSpec{filters: []string{"fan/y"}}),
			mosqSubscribe(t, env, subSpec{filters: []string{"other/#"}}),
		}
		publisher.publish(t, env, msg{Topic: "fan/x", Payload: "hello"})
		t.Run("MQTT-3.3.2-3 every matching subscriber receives it", func(t *testing.T) {
			for _, r := range matching {
				expect(t, r, msg{Topic: "fan/x", Payload: "hello"})
			}
		})
		t.Run("a subscriber not matching gets nothing", func(t *testing.T) {
			expectNone(t, env, append(others, matching...)...)
		})
	})
}

// TestOverlappingSubscriptions checks that a client whose filters overlap receives a matching
// message once.
func TestOverlappingSubscriptions(t *testing.T) {
	t.Parallel()
	t.Run("MQTT-3.3.5-1 delivered once", func(t *testing.T) {
		forEachKind(t, func(t *testing.T, k kind) {
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			sub := k.subscribe(t, env, subSpec{filters: []string{"ov/a", "ov/+", "ov/#", "+/a", "#"}})
			k.other().publish(t, env, msg{Topic: "ov/a", Payload: "once"})
			expect(t, sub, msg{Topic: "ov/a", Payload: "once"})
			expectNone(t, env, sub)
		})
	})
	// mosquitto_sub asks one QoS for all its filters, so only Paho can express this case.
	t.Run("MQTT-3.3.5-1 delivered once at the highest granted QoS", func(t *testing.T) {
		env := iotdtest.Start(t, server.Options{}, broker.Options{})
		sub := dialPaho(t, env, newID("ps"))
		sub.subscribe(t, map[string]byte{"ov/#": 0, "ov/+": 1, sub.sync: 0})
		pahoPublish(t, env, msg{Topic: "ov/a", Payload: "once", QoS: 1})
		expect(t, sub, msg{Topic: "ov/a", Payload: "once", QoS: 1})
		expectNone(t, env, sub)
		if !sub.IsConnectionOpen() {
			t.Fatalf("subscriber disconnected after acknowledging")
		}
	})
}
