package integration

import (
	"strings"
	"testing"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

// TestConnectValidation checks the CONNACK return codes of refused CONNECTs, and that an empty
// client identifier is accepted with a clean session.
func TestConnectValidation(t *testing.T) {
	t.Parallel()
	t.Run("MQTT-3.1.2-2 unsupported protocol version", func(t *testing.T) {
		// Paho v1.5.1 speaks MQTT 3.1 and 3.1.1 only; the raw client stands in for it.
		t.Run("mosquitto", func(t *testing.T) {
			needMosquitto(t)
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			p := startProc(t, "mosquitto_sub", append(hostPort(t, env.Addr), "-V", "mqttv5", "-t", "a", "-W", "10")...)
			if code := p.wait(t); code == 0 {
				t.Fatalf("mosquitto_sub -V mqttv5 exited with 0, want a failure")
			}
			if out := p.stderr.String(); !strings.Contains(out, "Unsupported Protocol Version") {
				t.Errorf("mosquitto_sub stderr = %q, want it to mention Unsupported Protocol Version", out)
			}
			env.Logs.WaitFor(t, "connection closed before CONNECT was accepted", "MQTT-3.1.2-2")
		})
		t.Run("raw", func(t *testing.T) {
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			c := iotdtest.Dial(t, env.Addr)
			ack := c.Connect(&packet.Connect{ProtocolName: "MQTT", ProtocolLevel: 5, ClientID: "v5", CleanSession: true})
			if ack.ReturnCode != packet.RefusedProtocolVersion || ack.SessionPresent {
				t.Fatalf("CONNACK %v session present %t, want %v and false", ack.ReturnCode, ack.SessionPresent, packet.RefusedProtocolVersion)
			}
			c.ExpectClosed() // [MQTT-3.2.2-5]
		})
	})

	// mosquitto_sub and mosquitto_pub refuse -c without -i themselves, so they cannot send this.
	t.Run("MQTT-3.1.3-8 empty client id with clean session 0 is rejected", func(t *testing.T) {
		t.Run("paho", func(t *testing.T) {
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			c := newPaho(t, pahoOptions(env, "").SetCleanSession(false))
			tok := c.connect(t)
			if tok.Error() == nil || tok.ReturnCode() != byte(packet.RefusedIdentifierRejected) {
				t.Fatalf("connect: error %v, return code %d; want identifier rejected (2)", tok.Error(), tok.ReturnCode())
			}
			if tok.SessionPresent() {
				t.Errorf("session present set on a refused CONNACK [MQTT-3.2.2-4]")
			}
		})
		t.Run("raw", func(t *testing.T) {
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			c := iotdtest.Dial(t, env.Addr)
			ack := c.Connect(&packet.Connect{ClientID: "", CleanSession: false, KeepAlive: 60})
			if ack.ReturnCode != packet.RefusedIdentifierRejected || ack.SessionPresent {
				t.Fatalf("CONNACK %v session present %t, want %v and false", ack.ReturnCode, ack.SessionPresent, packet.RefusedIdentifierRejected)
			}
			c.ExpectClosed() // [MQTT-3.2.2-5]
		})
	})

	t.Run("MQTT-3.1.3-6 empty client id with clean session 1 gets a unique assigned id", func(t *testing.T) {
		forEachKind(t, func(t *testing.T, k kind) {
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			// Two clients with empty identifiers connected at once: with the same assigned id the
			// second would take the first over.
			a := k.subscribe(t, env, subSpec{emptyID: true, filters: []string{"anon/t"}})
			b := k.subscribe(t, env, subSpec{emptyID: true, filters: []string{"anon/t"}})
			k.other().publish(t, env, msg{Topic: "anon/t", Payload: "hi"})
			expect(t, a, msg{Topic: "anon/t", Payload: "hi"})
			expect(t, b, msg{Topic: "anon/t", Payload: "hi"})
			env.Logs.WaitFor(t, `msg="client connected"`, "client_id=iotd-")
			if strings.Contains(env.Logs.String(), "session taken over") {
				t.Fatalf("the two clients with empty ids were given the same id; log:\n%s", env.Logs)
			}
		})
	})
}

// TestTakeover connects a second client with the identifier of a connected one.
func TestTakeover(t *testing.T) {
	t.Parallel()
	t.Run("MQTT-3.1.4-2 first connection closed and MQTT-3.1.2-8 its will published", func(t *testing.T) {
		t.Run("paho", func(t *testing.T) {
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			watcher := pahoSubscribe(t, env, subSpec{filters: []string{"will/#"}})
			id := newID("dup")
			first := dialPaho(t, env, id, func(o *mqtt.ClientOptions) { o.SetWill("will/"+id, "first gone", 0, false) })
			second := dialPaho(t, env, id)
			first.waitLost(t)
			expect(t, watcher, msg{Topic: "will/" + id, Payload: "first gone"})
			env.Logs.WaitFor(t, `msg="client disconnected"`, "client_id="+id+" ", "taken over")
			// The new connection owns the session and works.
			second.subscribe(t, map[string]byte{"after/takeover": 0})
			pahoPublish(t, env, msg{Topic: "after/takeover", Payload: "ok"})
			expect(t, second, msg{Topic: "after/takeover", Payload: "ok"})
		})
		t.Run("mosquitto", func(t *testing.T) {
			needMosquitto(t)
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			watcher := pahoSubscribe(t, env, subSpec{filters: []string{"will/#"}})
			id := newID("dup")
			first := startMosqSub(t, env.Addr, "-i", id, "-t", "x", "--will-topic", "will/"+id, "--will-payload", "first gone")
			first.waitSubscribed(t)
			// mosquitto_pub with the same id takes the session over; mosquitto_sub reconnects a
			// second later, which is after the assertions below.
			if code, out := runMosqPub(t, env.Addr, "-i", id, "-t", "x", "-m", "second"); code != 0 {
				t.Fatalf("mosquitto_pub exited with %d:\n%s", code, out)
			}
			env.Logs.WaitFor(t, `msg="client disconnected"`, "client_id="+id+" ", "taken over")
			expect(t, watcher, msg{Topic: "will/" + id, Payload: "first gone"})
		})
	})
}

// TestCleanSession checks that the subscriptions of a CleanSession=0 session survive a reconnect and
// that CleanSession=1 discards them.
func TestCleanSession(t *testing.T) {
	t.Parallel()
	t.Run("MQTT-3.1.2-4 subscriptions survive and MQTT-3.1.2-6 clean session discards them", func(t *testing.T) {
		forEachKind(t, func(t *testing.T, k kind) {
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			id := newID("cs")
			k.subscribe(t, env, subSpec{id: id, persistent: true, filters: []string{"cs/t"}}).disconnect(t)
			waitDisconnects(t, env, id, 1)

			// Resumed without subscribing to cs/t again.
			r := k.subscribe(t, env, subSpec{id: id, persistent: true})
			k.other().publish(t, env, msg{Topic: "cs/t", Payload: "kept"})
			expect(t, r, msg{Topic: "cs/t", Payload: "kept"})
			r.disconnect(t)
			waitDisconnects(t, env, id, 2)

			r = k.subscribe(t, env, subSpec{id: id})
			k.other().publish(t, env, msg{Topic: "cs/t", Payload: "gone"})
			expectNone(t, env, r)
		})
	})
	// mosquitto_sub does not print the session present flag, so this is Paho's alone.
	t.Run("session present flag", func(t *testing.T) {
		env := iotdtest.Start(t, server.Options{}, broker.Options{})
		id := newID("sp")
		steps := []struct {
			name    string
			clean   bool
			present bool
		}{
			{name: "MQTT-3.2.2-3 no stored session", clean: false, present: false},
			{name: "MQTT-3.2.2-2 stored session resumed", clean: false, present: true},
			{name: "MQTT-3.2.2-1 clean session", clean: true, present: false},
			{name: "MQTT-3.1.2-6 the clean session was not kept", clean: false, present: false},
		}
		for i, s := range steps {
			t.Run(s.name, func(t *testing.T) {
				c := newPaho(t, pahoOptions(env, id).SetCleanSession(s.clean))
				if got := c.mustConnect(t).SessionPresent(); got != s.present {
					t.Errorf("session present = %t, want %t", got, s.present)
				}
				c.subscribe(t, map[string]byte{"sp/t": 0})
				c.Disconnect(250)
				waitDisconnects(t, env, id, i+1)
			})
		}
	})
}
