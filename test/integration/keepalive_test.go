package integration

import (
	"strconv"
	"strings"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

// TestKeepAlive checks that a silent client is dropped, that PINGREQ keeps a client connected, and
// that the server's maximum keep-alive is enforced.
func TestKeepAlive(t *testing.T) {
	t.Parallel()
	// Neither Paho nor mosquitto can be told to stay silent; the raw client can.
	t.Run("MQTT-3.1.2-24 silent client closed after 1.5 times the keep-alive", func(t *testing.T) {
		t.Parallel()
		env := iotdtest.Start(t, server.Options{}, broker.Options{})
		c := iotdtest.Dial(t, env.Addr)
		id := newID("silent")
		begin := time.Now()
		if ack := c.Connect(&packet.Connect{ClientID: id, CleanSession: true, KeepAlive: 1}); ack.ReturnCode != packet.Accepted {
			t.Fatalf("CONNACK %v, want accepted", ack.ReturnCode)
		}
		c.ExpectClosed()
		t.Logf("closed %v after CONNECT (keep-alive 1 s)", time.Since(begin).Round(time.Millisecond))
		env.Logs.WaitFor(t, `msg="client disconnected"`, "client_id="+id+" ", "keep-alive timeout")
	})

	t.Run("MQTT-3.12.4-1 PINGREQ keeps the client connected", func(t *testing.T) {
		t.Run("paho", func(t *testing.T) {
			t.Parallel()
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			conns := make(chan *conn, 1)
			id := newID("ping")
			// Paho sends PINGREQ after a second of silence and gives up if PINGRESP is later than
			// PingTimeout; the server would drop it after 1.5 s without a PINGREQ.
			c := dialPaho(t, env, id, withConn(conns), func(o *mqtt.ClientOptions) {
				o.SetKeepAlive(time.Second).SetPingTimeout(5 * time.Second)
			})
			nc := <-conns
			const periods = 3
			iotdtest.Eventually(t, func() bool { return nc.pings.Load() >= periods }, "%d PINGREQs from Paho", periods)
			if !c.IsConnectionOpen() {
				t.Fatalf("paho disconnected after %d PINGREQs", nc.pings.Load())
			}
			// The connection still carries traffic both ways.
			c.subscribe(t, map[string]byte{"ping/t": 0})
			pahoPublish(t, env, msg{Topic: "ping/t", Payload: "alive"})
			expect(t, c, msg{Topic: "ping/t", Payload: "alive"})
			if strings.Contains(env.Logs.String(), "keep-alive timeout") {
				t.Fatalf("server timed the client out; log:\n%s", env.Logs)
			}
		})
		t.Run("mosquitto", func(t *testing.T) {
			needMosquitto(t)
			t.Parallel()
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			// 5 s is mosquitto's smallest keep-alive, so this takes two periods, not more.
			id := newID("ping")
			sub := startMosqSub(t, env.Addr, "-i", id, "-k", "5", "-t", "ping/t")
			sub.waitSubscribed(t)
			for range 2 {
				sub.waitLine(t, sub.stdout, &sub.pos, "PINGRESP", func(l string) bool { return strings.Contains(l, "received PINGRESP") })
			}
			pahoPublish(t, env, msg{Topic: "ping/t", Payload: "alive"})
			expect(t, sub, msg{Topic: "ping/t", Payload: "alive"})
			if strings.Contains(env.Logs.String(), "keep-alive timeout") {
				t.Fatalf("server timed the client out; log:\n%s", env.Logs)
			}
		})
	})

	// MQTT 3.1.1 cannot tell a client to use a shorter keep-alive, so the server refuses it with
	// CONNACK 2, as Mosquitto does.
	t.Run("maximum keep-alive refuses longer ones with CONNACK 2", func(t *testing.T) {
		cases := []struct {
			name      string
			keepAlive uint16
			code      packet.ConnackCode
		}{
			{name: "60 s over the maximum", keepAlive: 60, code: packet.RefusedIdentifierRejected},
			{name: "30 s at the maximum", keepAlive: 30, code: packet.Accepted},
			{name: "0 (never) over the maximum", keepAlive: 0, code: packet.RefusedIdentifierRejected},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Run("paho", func(t *testing.T) {
					env := iotdtest.Start(t, server.Options{MaxKeepAlive: 30}, broker.Options{})
					c := newPaho(t, pahoOptions(env, newID("ka")).SetKeepAlive(time.Duration(tc.keepAlive)*time.Second))
					tok := c.connect(t)
					if got := packet.ConnackCode(tok.ReturnCode()); got != tc.code {
						t.Fatalf("CONNACK %v (error %v), want %v", got, tok.Error(), tc.code)
					}
				})
				t.Run("mosquitto", func(t *testing.T) {
					needMosquitto(t)
					if tc.keepAlive == 0 {
						t.Skip("mosquitto_sub refuses a keep-alive below 5 s itself; Paho covers it")
					}
					env := iotdtest.Start(t, server.Options{MaxKeepAlive: 30}, broker.Options{})
					args := append(hostPort(t, env.Addr), "-k", strconv.Itoa(int(tc.keepAlive)), "-t", "ka", "-E")
					p := startProc(t, "mosquitto_sub", args...)
					code := p.wait(t)
					switch {
					case tc.code == packet.Accepted && code != 0:
						t.Fatalf("mosquitto_sub -k %d exited with %d, want 0\n%s", tc.keepAlive, code, p.stderr)
					case tc.code != packet.Accepted && code == 0:
						t.Fatalf("mosquitto_sub -k %d exited with 0, want a failure", tc.keepAlive)
					case tc.code != packet.Accepted && !strings.Contains(strings.ToLower(p.stderr.String()), "identifier rejected"):
						t.Errorf("mosquitto_sub stderr = %q, want it to mention identifier rejected", p.stderr)
					}
				})
			})
		}
	})
}
