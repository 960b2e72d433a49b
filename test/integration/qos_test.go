package integration

import (
	"fmt"
	"testing"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/server"
)

// TestQoS1And2 checks that QoS 1 and 2 messages from both clients are accepted and acknowledged and
// that subscribers are granted and sent the QoS they asked for.
func TestQoS1And2(t *testing.T) {
	t.Parallel()
	t.Run("MQTT-4.3.2-2 QoS 1 PUBLISH acknowledged with PUBACK", func(t *testing.T) {
		forEachKind(t, func(t *testing.T, k kind) {
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			sub := k.other().subscribe(t, env, subSpec{filters: []string{"q/1"}})
			// publish fails unless mosquitto_pub exits with 0 or Paho's token completes without
			// error, which both do only after the PUBACK.
			k.publish(t, env, msg{Topic: "q/1", Payload: "one", QoS: 1})
			expect(t, sub, msg{Topic: "q/1", Payload: "one"}) // [MQTT-3.8.4-6] granted QoS 0
			expectNone(t, env, sub)
		})
	})
	t.Run("MQTT-4.3.3-2 QoS 2 PUBLISH completed with PUBREC and PUBCOMP", func(t *testing.T) {
		forEachKind(t, func(t *testing.T, k kind) {
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			sub := k.other().subscribe(t, env, subSpec{filters: []string{"q/2"}})
			k.publish(t, env, msg{Topic: "q/2", Payload: "two", QoS: 2})
			expect(t, sub, msg{Topic: "q/2", Payload: "two"})
			expectNone(t, env, sub)
		})
	})
	t.Run("MQTT-3.9.3-2 SUBACK grants the QoS asked for", func(t *testing.T) {
		for _, q := range []byte{0, 1, 2} {
			t.Run(fmt.Sprintf("QoS %d", q), func(t *testing.T) {
				forEachKind(t, func(t *testing.T, k kind) {
					env := iotdtest.Start(t, server.Options{}, broker.Options{})
					// subscribe fails unless every filter is granted q.
					k.subscribe(t, env, subSpec{qos: q, filters: []string{"g/a", "g/+"}})
				})
			})
		}
		// mosquitto_sub asks one QoS for every filter; Paho can mix them in one SUBSCRIBE.
		t.Run("MQTT-3.9.3-1 mixed in one SUBSCRIBE", func(t *testing.T) {
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			dialPaho(t, env, newID("ps")).subscribe(t, map[string]byte{"g/0": 0, "g/1": 1, "g/2": 2})
		})
	})
	t.Run("MQTT-3.8.4-6 subscribers receive at the lower of published and granted QoS", func(t *testing.T) {
		for _, pubQoS := range []byte{1, 2} {
			for _, subQoS := range []byte{1, 2} {
				t.Run(fmt.Sprintf("published %d granted %d", pubQoS, subQoS), func(t *testing.T) {
					forEachKind(t, func(t *testing.T, k kind) {
						env := iotdtest.Start(t, server.Options{}, broker.Options{})
						sub := k.subscribe(t, env, subSpec{qos: subQoS, filters: []string{"q/#"}})
						k.other().publish(t, env, msg{Topic: "q/x", Payload: "m", QoS: pubQoS})
						expect(t, sub, msg{Topic: "q/x", Payload: "m", QoS: min(pubQoS, subQoS)})
						// The subscriber acknowledged it; the connection goes on.
						expectNone(t, env, sub)
					})
				})
			}
		}
	})
}
