package integration

import (
	"strconv"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

// ending is how a client with a will leaves.
type ending int

const (
	endSilent     ending = iota // stops sending: the server's keep-alive timeout ends it
	endNetClose                 // its network connection closes without DISCONNECT
	endGarbage                  // it sends bytes that are no MQTT packet
	endDisconnect               // it sends DISCONNECT
)

// Clients with a will: Paho, mosquitto_sub and the raw client.
const (
	willPaho = "paho"
	willMosq = "mosquitto"
	willRaw  = "raw"
)

// endWithWill connects a client of the given kind with will w and ends its connection as e says.
// It returns the client identifier.
func endWithWill(t *testing.T, env *iotdtest.Env, kind string, w msg, e ending) string {
	t.Helper()
	id := newID("will")
	switch kind {
	case willPaho:
		conns := make(chan *conn, 1)
		c := dialPaho(t, env, id, withConn(conns), func(o *mqtt.ClientOptions) {
			o.SetWill(w.Topic, w.Payload, w.QoS, w.Retain)
			if e == endSilent {
				// PINGREQs are dropped below; Paho must not give up before the server does.
				o.SetKeepAlive(time.Second).SetPingTimeout(time.Minute)
			}
		})
		nc := <-conns
		switch e {
		case endSilent:
			nc.silent.Store(true)
		case endNetClose:
			nc.Conn.Close()
		case endGarbage:
			nc.Conn.Write([]byte{0xF0, 0x00}) // packet type 15 is reserved
		case endDisconnect:
			c.Disconnect(250)
		}
	case willMosq:
		needMosquitto(t)
		args := []string{"-i", id, "-t", "nothing/" + id, "--will-topic", w.Topic, "--will-payload", w.Payload,
			"--will-qos", strconv.Itoa(int(w.QoS))}
		if w.Retain {
			args = append(args, "--will-retain")
		}
		if e == endSilent {
			args = append(args, "-k", "5") // mosquitto's smallest
		}
		sub := startMosqSub(t, env.Addr, args...)
		sub.waitSubscribed(t)
		switch e {
		case endSilent:
			sub.signal(syscall.SIGSTOP)
			t.Cleanup(func() { sub.signal(syscall.SIGCONT) }) // runs before the SIGTERM of startProc
			// 7.5 s is most of iotdtest.Timeout, which the caller's waits use: wait longer here.
			within(t, 3*iotdtest.Timeout, func() bool {
				return countLines(env.Logs.String(), "client_id="+id+" ", "keep-alive timeout") > 0
			}, "the keep-alive timeout of %s", id)
		case endNetClose:
			sub.signal(syscall.SIGKILL)
			sub.wait(t)
		case endGarbage:
			t.Fatalf("mosquitto_sub cannot send garbage")
		case endDisconnect:
			sub.disconnect(t) // SIGTERM: mosquitto_sub sends DISCONNECT
		}
	case willRaw:
		c := iotdtest.Dial(t, env.Addr)
		keepAlive := uint16(60)
		if e == endSilent {
			keepAlive = 1
		}
		ack := c.Connect(&packet.Connect{ClientID: id, CleanSession: true, KeepAlive: keepAlive,
			Will: &packet.Will{Topic: w.Topic, Payload: []byte(w.Payload), QoS: packet.QoS(w.QoS), Retain: w.Retain}})
		if ack.ReturnCode != packet.Accepted {
			t.Fatalf("CONNACK %v, want accepted", ack.ReturnCode)
		}
		switch e {
		case endNetClose:
			c.Conn.Close()
		case endGarbage:
			c.SendRaw([]byte{0x00, 0x00}) // packet type 0 is reserved
			c.ExpectClosed()              // [MQTT-4.8.0-1]
		case endDisconnect:
			c.Send(&packet.Disconnect{})
		}
	default:
		t.Fatalf("unknown client kind %q", kind)
	}
	return id
}

// TestWill checks when a will is published and with which flags.
func TestWill(t *testing.T) {
	t.Parallel()
	published := []struct {
		name   string
		end    ending
		kinds  []string
		reason string // in the server's "client disconnected" line
	}{
		{name: "MQTT-3.1.2-8 published on keep-alive timeout", end: endSilent,
			kinds: []string{willPaho, willMosq, willRaw}, reason: "keep-alive timeout"},
		{name: "MQTT-3.1.2-8 published when the network connection closes without DISCONNECT", end: endNetClose,
			kinds: []string{willPaho, willMosq, willRaw}},
		// Neither third-party client sends garbage; Paho's socket is written to underneath it.
		{name: "MQTT-4.8.0-1 published when the client breaks the protocol", end: endGarbage,
			kinds: []string{willPaho, willRaw}, reason: "protocol violation"},
	}
	for _, tc := range published {
		t.Run(tc.name, func(t *testing.T) {
			for _, kind := range tc.kinds {
				t.Run(kind, func(t *testing.T) {
					t.Parallel()
					env := iotdtest.Start(t, server.Options{}, broker.Options{})
					watcher := pahoSubscribe(t, env, subSpec{filters: []string{"will/#"}})
					w := msg{Topic: "will/" + kind, Payload: "gone"}
					id := endWithWill(t, env, kind, w, tc.end)
					expect(t, watcher, w)
					env.Logs.WaitFor(t, `msg="client disconnected"`, "client_id="+id+" ", tc.reason)
				})
			}
		})
	}

	t.Run("MQTT-3.14.4-3 not published after DISCONNECT", func(t *testing.T) {
		for _, kind := range []string{willPaho, willMosq, willRaw} {
			t.Run(kind, func(t *testing.T) {
				t.Parallel()
				env := iotdtest.Start(t, server.Options{}, broker.Options{})
				watcher := pahoSubscribe(t, env, subSpec{filters: []string{"will/#"}})
				id := endWithWill(t, env, kind, msg{Topic: "will/" + kind, Payload: "gone"}, endDisconnect)
				waitRouted(t, env, id)
				expectNone(t, env, watcher)
			})
		}
	})

	t.Run("retain flag", func(t *testing.T) {
		cases := []struct {
			name   string
			retain bool
		}{
			{name: "MQTT-3.1.2-17 a will with retain is retained", retain: true},
			{name: "MQTT-3.1.2-16 a will without retain is not retained", retain: false},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				for _, kind := range []string{willPaho, willMosq} {
					t.Run(kind, func(t *testing.T) {
						t.Parallel()
						env := iotdtest.Start(t, server.Options{}, broker.Options{})
						live := pahoSubscribe(t, env, subSpec{filters: []string{"will/#"}})
						w := msg{Topic: "will/" + kind, Payload: "gone", Retain: tc.retain}
						endWithWill(t, env, kind, w, endNetClose)
						// [MQTT-3.3.1-9] an existing subscription gets it with RETAIN 0.
						expect(t, live, msg{Topic: w.Topic, Payload: w.Payload})
						later := pahoSubscribe(t, env, subSpec{filters: []string{"will/#"}})
						if tc.retain {
							expect(t, later, w)
						}
						expectNone(t, env, later)
					})
				}
			})
		}
	})

	// The watchers are raw clients: they read the QoS of the PUBLISH as sent and do not answer it.
	t.Run("MQTT-3.8.4-6 a QoS 1 will is delivered at the granted QoS", func(t *testing.T) {
		for _, kind := range []string{willPaho, willMosq} {
			t.Run(kind, func(t *testing.T) {
				t.Parallel()
				env := iotdtest.Start(t, server.Options{}, broker.Options{})
				watchers := map[packet.QoS]*iotdtest.Client{}
				for _, q := range []packet.QoS{packet.QoS0, packet.QoS1, packet.QoS2} {
					c := iotdtest.Dial(t, env.Addr)
					c.MustConnect(newID("watch"), true)
					if got := c.Subscribe(1, q, "will/#"); len(got) != 1 || got[0] != byte(q) {
						t.Fatalf("SUBACK %v, want [%d]", got, q)
					}
					watchers[q] = c
				}
				endWithWill(t, env, kind, msg{Topic: "will/" + kind, Payload: "gone", QoS: 1}, endNetClose)
				for granted, c := range watchers {
					p := c.ReadPublish()
					want := min(granted, packet.QoS1)
					if string(p.Topic) != "will/"+kind || string(p.Payload) != "gone" || p.QoS != want || p.Retain {
						t.Errorf("watcher granted QoS %d got PUBLISH topic %q payload %q QoS %d retain %t; want will/%s gone QoS %d retain false",
							granted, p.Topic, p.Payload, p.QoS, p.Retain, kind, want)
					}
				}
			})
		}
	})
}
