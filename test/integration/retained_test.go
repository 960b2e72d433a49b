package integration

import (
	"slices"
	"strings"
	"testing"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/server"
)

// expectSet fails the test unless the next len(want) messages r receives are want, in any order:
// the retained messages of one subscription come in no particular order.
func expectSet(t *testing.T, r receiver, want ...msg) {
	t.Helper()
	got := make([]msg, len(want))
	for i := range got {
		got[i] = r.next(t)
	}
	key := func(a, b msg) int { return strings.Compare(a.String(), b.String()) }
	slices.SortFunc(got, key)
	slices.SortFunc(want, key)
	if !slices.Equal(got, want) {
		t.Fatalf("received %v, want %v", got, want)
	}
}

// TestRetained stores, replaces and deletes retained messages with one client kind and checks
// with the other what new and existing subscriptions receive.
func TestRetained(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, k kind) {
		needMosquitto(t) // both kinds take part
		t.Parallel()
		env := iotdtest.Start(t, server.Options{}, broker.Options{})
		pub := k.other().publish
		live := k.subscribe(t, env, subSpec{filters: []string{"r/#"}})
		// newSub subscribes a new client to filter and checks that it gets exactly want.
		newSub := func(t *testing.T, filter string, want ...msg) {
			t.Helper()
			r := k.subscribe(t, env, subSpec{filters: []string{filter}})
			expectSet(t, r, want...)
			expectNone(t, env, r)
			r.disconnect(t)
		}

		t.Run("MQTT-3.3.1-5 stored and MQTT-3.3.1-9 live delivery has RETAIN 0", func(t *testing.T) {
			pub(t, env, msg{Topic: "r/a", Payload: "one", Retain: true})
			expect(t, live, msg{Topic: "r/a", Payload: "one"})
		})
		t.Run("MQTT-3.3.1-6 new subscriptions get it with MQTT-3.3.1-8 RETAIN 1", func(t *testing.T) {
			for _, filter := range []string{"r/a", "r/+", "r/#", "+/a", "#"} {
				t.Run(filter, func(t *testing.T) {
					newSub(t, filter, msg{Topic: "r/a", Payload: "one", Retain: true})
				})
			}
		})
		t.Run("MQTT-3.3.1-7 a new retained message replaces the old one", func(t *testing.T) {
			pub(t, env, msg{Topic: "r/a", Payload: "two", Retain: true})
			expect(t, live, msg{Topic: "r/a", Payload: "two"})
			newSub(t, "r/+", msg{Topic: "r/a", Payload: "two", Retain: true})
		})
		t.Run("MQTT-3.3.1-12 a message without RETAIN leaves it alone", func(t *testing.T) {
			pub(t, env, msg{Topic: "r/a", Payload: "three"})
			expect(t, live, msg{Topic: "r/a", Payload: "three"})
			newSub(t, "r/#", msg{Topic: "r/a", Payload: "two", Retain: true})
		})
		t.Run("several topics through one wildcard", func(t *testing.T) {
			pub(t, env, msg{Topic: "r/b/c", Payload: "deep", Retain: true})
			expect(t, live, msg{Topic: "r/b/c", Payload: "deep"})
			newSub(t, "r/#", msg{Topic: "r/a", Payload: "two", Retain: true}, msg{Topic: "r/b/c", Payload: "deep", Retain: true})
			newSub(t, "r/+", msg{Topic: "r/a", Payload: "two", Retain: true})
		})
		t.Run("MQTT-3.3.1-10 an empty retained payload is delivered and deletes it", func(t *testing.T) {
			pub(t, env, msg{Topic: "r/a", Payload: "", Retain: true})
			expect(t, live, msg{Topic: "r/a", Payload: ""})
			newSub(t, "r/#", msg{Topic: "r/b/c", Payload: "deep", Retain: true})
			newSub(t, "r/a")
		})
		expectNone(t, env, live)
	})
}

// TestRetainedLimits checks that the retained limits refuse extra topics and oversized payloads
// without stopping their delivery to existing subscriptions.
func TestRetainedLimits(t *testing.T) {
	t.Parallel()
	forEachKind(t, func(t *testing.T, k kind) {
		needMosquitto(t) // both kinds take part
		t.Parallel()
		env := iotdtest.Start(t, server.Options{}, broker.Options{MaxRetained: 2, MaxRetainedPayload: 10})
		pub := k.other().publish
		live := k.subscribe(t, env, subSpec{filters: []string{"lim/#"}})
		retained := func(t *testing.T, want ...msg) {
			t.Helper()
			r := k.subscribe(t, env, subSpec{filters: []string{"lim/#"}})
			expectSet(t, r, want...)
			expectNone(t, env, r)
			r.disconnect(t)
		}
		publish := func(t *testing.T, topic, payload string) {
			t.Helper()
			pub(t, env, msg{Topic: topic, Payload: payload, Retain: true})
			expect(t, live, msg{Topic: topic, Payload: payload})
		}

		t.Run("a topic beyond the count limit is routed, not retained", func(t *testing.T) {
			publish(t, "lim/1", "a")
			publish(t, "lim/2", "b")
			publish(t, "lim/3", "c")
			env.Logs.WaitFor(t, "retained message not stored: retained limit reached", "topic=lim/3")
			retained(t, msg{Topic: "lim/1", Payload: "a", Retain: true}, msg{Topic: "lim/2", Payload: "b", Retain: true})
		})
		t.Run("replacing a retained topic works at the limit", func(t *testing.T) {
			publish(t, "lim/1", "a2")
			retained(t, msg{Topic: "lim/1", Payload: "a2", Retain: true}, msg{Topic: "lim/2", Payload: "b", Retain: true})
		})
		t.Run("a payload over the size limit is routed, not retained", func(t *testing.T) {
			publish(t, "lim/2", "") // make room, so that only the size refuses the next one
			publish(t, "lim/4", "0123456789X")
			env.Logs.WaitFor(t, "retained message not stored: payload over the limit", "topic=lim/4")
			publish(t, "lim/5", "0123456789") // exactly the limit
			retained(t, msg{Topic: "lim/1", Payload: "a2", Retain: true}, msg{Topic: "lim/5", Payload: "0123456789", Retain: true})
		})
		if got := env.Broker.Stats().RetainRefused; got != 2 {
			t.Errorf("Stats().RetainRefused = %d, want 2", got)
		}
		expectNone(t, env, live)
	})
}
