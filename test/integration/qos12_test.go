package integration

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

// ---- helpers of the QoS 1/2 tests ----

// waitStopped waits until the process p is stopped by SIGSTOP (state T in /proc), so that it
// reads and acknowledges nothing more.
func waitStopped(t *testing.T, p *proc) {
	t.Helper()
	path := fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid)
	iotdtest.Eventually(t, func() bool {
		b, err := os.ReadFile(path)
		if err != nil {
			return false
		}
		// The state follows the command name, which is in parentheses: "pid (comm) S ...".
		_, rest, ok := strings.Cut(string(b), ") ")
		return ok && strings.HasPrefix(rest, "T")
	}, "%s (pid %d) stopped", p.name, p.cmd.Process.Pid)
}

// payloads returns n payloads "<prefix>-00", "<prefix>-01", ...
func payloads(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%02d", prefix, i)
	}
	return out
}

// publishMany publishes each payload on topic at qos, in order, on one connection of client kind
// k, and returns once the broker has routed all of them.
func publishMany(t *testing.T, env *iotdtest.Env, k kind, topic string, qos byte, msgs []string) {
	t.Helper()
	if k.name == pahoKind.name {
		c := dialPaho(t, env, newID("pp"))
		for _, m := range msgs {
			// Each publish completes (PUBACK, or PUBCOMP) before the next one starts.
			wait(t, c.Publish(topic, qos, false, m), "publish")
		}
		c.Disconnect(250)
		waitRouted(t, env, c.id)
		return
	}
	// mosquitto_pub -l sends each line of its input as one message, on one connection.
	id := newID("mp")
	args := append(hostPort(t, env.Addr), "-d", "-i", id, "-t", topic, "-q", strconv.Itoa(int(qos)), "-l")
	p := startProcWith(t, nil, strings.NewReader(strings.Join(msgs, "\n")+"\n"), "mosquitto_pub", args...)
	if code := p.wait(t); code != 0 {
		t.Fatalf("mosquitto_pub -l exited with %d:\n%s%s", code, p.stdout, p.stderr)
	}
	waitRouted(t, env, id)
}

// resume connects a client of kind k to the stored session id (CleanSession=0) without waiting
// for anything but the CONNACK: messages the broker sends at once are not missed. The returned
// receiver is subscribed to its sync topic, so expectNone works on it.
func resume(t *testing.T, env *iotdtest.Env, k kind, id string, qos byte, filter string) receiver {
	t.Helper()
	if k.name == pahoKind.name {
		c := newPaho(t, pahoOptions(env, id).SetCleanSession(false))
		if !c.mustConnect(t).SessionPresent() {
			t.Fatalf("paho %s: session present 0 on reconnect, want 1 ([MQTT-3.2.2-2])", id)
		}
		c.subscribe(t, map[string]byte{c.sync: qos})
		return c
	}
	// mosquitto_sub subscribes again on every connection; the stored messages may come before its
	// SUBACK, so its output is read from the start.
	sync := newSyncTopic()
	sub := startMosqSub(t, env.Addr, "-c", "-i", id, "-q", strconv.Itoa(int(qos)), "-t", filter, "-t", sync)
	sub.sync = sync
	pos := 0
	sub.waitLine(t, sub.stdout, &pos, "a SUBACK", func(l string) bool { return strings.HasPrefix(l, "Subscribed (mid: ") })
	return sub
}

// resumeRaw connects a raw client to the stored session id and checks that it is present.
func resumeRaw(t *testing.T, env *iotdtest.Env, id string) *iotdtest.Client {
	t.Helper()
	c := iotdtest.Dial(t, env.Addr)
	if ack := c.MustConnect(id, false); !ack.SessionPresent {
		t.Fatalf("%s: session present 0 on reconnect, want 1 ([MQTT-3.2.2-2])", id)
	}
	return c
}

// completeRaw acknowledges a PUBLISH the way a client must: PUBACK at QoS 1; at QoS 2 PUBREC,
// then the broker's PUBREL with the same packet id ([MQTT-4.3.3-1]), answered with PUBCOMP.
func completeRaw(t *testing.T, c *iotdtest.Client, p *packet.Publish) {
	t.Helper()
	switch p.QoS {
	case packet.QoS1:
		c.Send(&packet.Puback{PacketID: p.PacketID})
	case packet.QoS2:
		c.Send(&packet.Pubrec{PacketID: p.PacketID})
		r, ok := c.Read().(*packet.Pubrel)
		if !ok || r.PacketID != p.PacketID {
			t.Fatalf("after PUBREC %d got %T %+v, want PUBREL %d", p.PacketID, r, r, p.PacketID)
		}
		c.Send(&packet.Pubcomp{PacketID: p.PacketID})
	}
}

// rawSubscriber connects a raw client with a clean session and subscribes it to filter at qos.
func rawSubscriber(t *testing.T, env *iotdtest.Env, qos packet.QoS, filter string) *iotdtest.Client {
	t.Helper()
	c := iotdtest.Dial(t, env.Addr)
	c.MustConnect(newID("raw"), true)
	if got := c.Subscribe(1, qos, filter); len(got) != 1 || got[0] != byte(qos) {
		t.Fatalf("SUBACK %v, want [%d]", got, qos)
	}
	return c
}

// ---- persistent sessions with Paho and mosquitto ----

// TestOfflineDelivery checks, with Paho and mosquitto_sub as persistent subscribers and the other
// client as publisher, that messages published while the subscriber is away are delivered when it
// comes back: all of them, in the order published, once each.
func TestOfflineDelivery(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		qos  byte
	}{
		{"MQTT-3.1.2-4 MQTT-3.1.2-5 MQTT-4.6.0-6 QoS 1 published while offline arrive after reconnect, in order", 1},
		{"MQTT-3.1.2-4 MQTT-3.1.2-5 MQTT-4.6.0-6 QoS 2 published while offline arrive after reconnect, in order, exactly once", 2},
	} {
		q := tc.qos
		t.Run(tc.name, func(t *testing.T) {
			forEachKind(t, func(t *testing.T, k kind) {
				needMosquitto(t) // both kinds take part
				t.Parallel()
				// A small window, so that the queue drains through several rounds of acknowledgements.
				env := iotdtest.Start(t, server.Options{}, broker.Options{MaxInflight: 4})
				id := newID("off")
				topic := "off/" + id
				k.subscribe(t, env, subSpec{id: id, persistent: true, qos: q, filters: []string{topic}}).disconnect(t)
				waitDisconnects(t, env, id, 1)

				want := payloads("m", 30)
				publishMany(t, env, k.other(), topic, q, want)
				r := resume(t, env, k, id, q, topic)
				for _, p := range want {
					expect(t, r, msg{Topic: topic, Payload: p, QoS: q})
				}
				expectNone(t, env, r) // no second copy
				r.disconnect(t)
			})
		})
	}
}

// ---- a subscriber killed mid-flight ----

// Environment of the Paho subscriber subprocess (TestPahoSubscriberProcess).
const (
	pahoProcAddr  = "IOTD_TEST_PAHO_ADDR"
	pahoProcID    = "IOTD_TEST_PAHO_ID"
	pahoProcTopic = "IOTD_TEST_PAHO_TOPIC"
	pahoProcQoS   = "IOTD_TEST_PAHO_QOS"
)

// TestPahoSubscriberProcess is not a test: TestKilledSubscriber runs the test binary as a
// subprocess with only this function, to have a Paho subscriber it can kill. It connects with
// CleanSession=0, subscribes, prints "READY", then prints "MSG <packet id> <dup> <qos> <topic>
// <payload>" for each message and never acknowledges one (automatic acknowledgement is off).
func TestPahoSubscriberProcess(t *testing.T) {
	addr := os.Getenv(pahoProcAddr)
	if addr == "" {
		t.Skip("subprocess of TestKilledSubscriber; runs only when started by it")
	}
	qos, _ := strconv.Atoi(os.Getenv(pahoProcQoS))
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(os.Getenv(pahoProcID)).
		SetCleanSession(false).SetAutoReconnect(false).SetConnectRetry(false).SetAutoAckDisabled(true).
		SetConnectTimeout(iotdtest.Timeout).SetKeepAlive(30 * time.Second)
	opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
		fmt.Printf("MSG %d %t %d %s %s\n", m.MessageID(), m.Duplicate(), m.Qos(), m.Topic(), m.Payload())
	})
	c := mqtt.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(iotdtest.Timeout) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer c.Disconnect(0)
	if tok := c.Subscribe(os.Getenv(pahoProcTopic), byte(qos), nil); !tok.WaitTimeout(iotdtest.Timeout) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	fmt.Println("READY")
	time.Sleep(procTimeout) // until the parent kills it; the parent's timeout ends it anyway
}

// TestKilledSubscriber kills a persistent subscriber while messages are in flight to it (sent,
// not acknowledged) and reconnects a raw client with the same client identifier, which sees the
// flags: the unacknowledged messages come again, in order, with DUP set and their packet ids.
//
// The killed subscriber is a mosquitto_sub stopped with SIGSTOP before the messages are published
// (so it cannot acknowledge them) and then killed with SIGKILL; a Paho client in a subprocess with
// automatic acknowledgement off, killed with SIGKILL once it has printed the messages; and a raw
// client that reads them without answering and closes its socket.
func TestKilledSubscriber(t *testing.T) {
	t.Parallel()
	const n = 5
	for _, q := range []byte{1, 2} {
		t.Run(fmt.Sprintf("MQTT-4.4.0-1 MQTT-3.3.1-1 QoS %d unacknowledged messages re-sent with DUP 1 after SIGKILL", q), func(t *testing.T) {
			for _, victim := range []string{"mosquitto", "paho", "raw"} {
				t.Run(victim, func(t *testing.T) {
					t.Parallel()
					env := iotdtest.Start(t, server.Options{}, broker.Options{})
					id := newID("kill")
					topic := "kill/" + id
					want := payloads("inflight", n)
					var ids []uint16 // the packet ids of the first sends, where the victim shows them
					switch victim {
					case "mosquitto":
						needMosquitto(t)
						sub := startMosqSub(t, env.Addr, "-c", "-i", id, "-q", strconv.Itoa(int(q)), "-t", topic)
						sub.waitSubscribed(t)
						sub.signal(syscall.SIGSTOP)
						waitStopped(t, sub.proc)
						before := env.Broker.Stats().Delivered
						publishMany(t, env, pahoKind, topic, q, want)
						// Sent to the stopped process's socket: in flight, not acknowledged.
						if d := env.Broker.Stats().Delivered - before; d != n {
							t.Fatalf("%d PUBLISH packets sent to the subscriber, want %d", d, n)
						}
						sub.signal(syscall.SIGKILL)
						sub.wait(t)
					case "paho":
						p := startProcWith(t, []string{pahoProcAddr + "=" + env.Addr, pahoProcID + "=" + id,
							pahoProcTopic + "=" + topic, pahoProcQoS + "=" + strconv.Itoa(int(q)),
							// The subprocess's TestMain would build cmd/iotd, which it does not need:
							// without the go tool on its PATH that fails at once. Its temporary
							// directory, which SIGKILL leaves behind, is removed with the test's.
							"PATH=", "TMPDIR=" + t.TempDir()},
							nil, os.Args[0], "-test.run=^TestPahoSubscriberProcess$")
						pos := 0
						p.waitLine(t, p.stdout, &pos, "READY", func(l string) bool { return l == "READY" })
						publishMany(t, env, pahoKind, topic, q, want)
						for i, w := range want {
							line := p.waitLine(t, p.stdout, &pos, "a message", func(l string) bool { return strings.HasPrefix(l, "MSG ") })
							f := strings.SplitN(line, " ", 6)
							if len(f) != 6 {
								t.Fatalf("cannot parse %q", line)
							}
							pid, err := strconv.ParseUint(f[1], 10, 16)
							if err != nil {
								t.Fatalf("cannot parse the packet id in %q: %v", line, err)
							}
							if got := fmt.Sprintf("%s %s %s %s", f[2], f[3], f[4], f[5]); got != fmt.Sprintf("false %d %s %s", q, topic, w) {
								t.Fatalf("message %d: paho printed %q, want DUP false, QoS %d, %s %s", i, line, q, topic, w)
							}
							ids = append(ids, uint16(pid))
						}
						p.signal(syscall.SIGKILL)
						p.wait(t)
					case "raw":
						c := iotdtest.Dial(t, env.Addr)
						c.MustConnect(id, false)
						c.Subscribe(1, packet.QoS(q), topic)
						publishMany(t, env, pahoKind, topic, q, want)
						for range want {
							p := c.ReadPublish()
							if p.Dup {
								t.Fatalf("first send %+v has DUP 1", p)
							}
							ids = append(ids, p.PacketID)
						}
						c.Conn.Close() // no acknowledgement, no DISCONNECT
					}
					env.Logs.WaitFor(t, `msg="client disconnected"`, "client_id="+id+" ")

					c := resumeRaw(t, env, id)
					var got []*packet.Publish
					for i, w := range want {
						p := c.ReadPublish()
						if !p.Dup || p.QoS != packet.QoS(q) || string(p.Topic) != topic || string(p.Payload) != w || p.PacketID == 0 {
							t.Fatalf("message %d: got %+v, want a re-send (DUP 1) of %s %q at QoS %d", i, p, topic, w, q)
						}
						if ids != nil && p.PacketID != ids[i] {
							t.Fatalf("message %d: re-sent with packet id %d, first sent with %d ([MQTT-4.4.0-1] original ids)", i, p.PacketID, ids[i])
						}
						if slices.ContainsFunc(got, func(o *packet.Publish) bool { return o.PacketID == p.PacketID }) {
							t.Fatalf("message %d: packet id %d used twice among the messages in flight ([MQTT-2.3.1-4])", i, p.PacketID)
						}
						got = append(got, p)
					}
					for _, p := range got {
						completeRaw(t, c, p)
					}
					c.ExpectNoPublish()
					c.Send(&packet.Disconnect{})
					c.ExpectClosed()
					waitDisconnects(t, env, id, 1)
					// Acknowledged now: nothing is kept for a further reconnect.
					resumeRaw(t, env, id).ExpectNoPublish()
				})
			}
		})
	}
}

// ---- retained messages and wills at QoS 1 and 2 ----

// TestRetainedQoS12 stores retained messages at QoS 1 and 2 (published by Paho and by
// mosquitto_pub) and checks what new subscriptions at QoS 1 and 2 of every client kind receive:
// the message with RETAIN 1 at the lower of the two QoS, through the whole QoS 2 flow when both
// are 2.
func TestRetainedQoS12(t *testing.T) {
	t.Parallel()
	for _, pubQoS := range []byte{1, 2} {
		t.Run(fmt.Sprintf("MQTT-3.3.1-6 MQTT-3.8.4-6 retained at QoS %d", pubQoS), func(t *testing.T) {
			needMosquitto(t)
			t.Parallel()
			env := iotdtest.Start(t, server.Options{}, broker.Options{})
			stored := []msg{
				{Topic: "rq/paho", Payload: "from paho", QoS: pubQoS, Retain: true},
				{Topic: "rq/mosquitto", Payload: "from mosquitto", QoS: pubQoS, Retain: true},
			}
			pahoPublish(t, env, stored[0])
			mosqPublish(t, env, stored[1])
			for _, subQoS := range []byte{1, 2} {
				want := make([]msg, len(stored))
				for i, m := range stored {
					m.QoS = min(pubQoS, subQoS)
					want[i] = m
				}
				t.Run(fmt.Sprintf("subscribed at QoS %d", subQoS), func(t *testing.T) {
					forEachKind(t, func(t *testing.T, k kind) {
						r := k.subscribe(t, env, subSpec{qos: subQoS, filters: []string{"rq/#"}})
						expectSet(t, r, want...)
						expectNone(t, env, r)
						r.disconnect(t)
					})
					t.Run("raw", func(t *testing.T) {
						c := rawSubscriber(t, env, packet.QoS(subQoS), "rq/#")
						var got []msg
						var pubs []*packet.Publish
						for range want {
							p := c.ReadPublish()
							if p.Dup || p.PacketID == 0 {
								t.Fatalf("got %+v, want DUP 0 and a packet id", p)
							}
							got = append(got, msg{Topic: string(p.Topic), Payload: string(p.Payload), QoS: byte(p.QoS), Retain: p.Retain})
							pubs = append(pubs, p)
						}
						for _, p := range pubs { // both were sent at once, so they are acknowledged after
							completeRaw(t, c, p)
						}
						key := func(a, b msg) int { return strings.Compare(a.String(), b.String()) }
						slices.SortFunc(got, key)
						slices.SortFunc(want, key)
						if !slices.Equal(got, want) {
							t.Fatalf("received %v, want %v", got, want)
						}
						c.ExpectNoPublish()
					})
				})
			}
		})
	}
}

// TestWillQoS12 ends Paho and mosquitto_sub clients that have a QoS 1 or 2 will without DISCONNECT
// and checks that subscribers of every kind receive the will at the lower of its QoS and theirs;
// the raw subscriber at QoS 2 runs the whole PUBREC, PUBREL, PUBCOMP flow. A retained QoS 2 will
// also reaches a later QoS 2 subscription at QoS 2.
func TestWillQoS12(t *testing.T) {
	t.Parallel()
	for _, willQoS := range []byte{1, 2} {
		for _, kind := range []string{willPaho, willMosq} {
			t.Run(fmt.Sprintf("MQTT-3.1.2-8 MQTT-3.8.4-6 QoS %d will of %s", willQoS, kind), func(t *testing.T) {
				needMosquitto(t) // a subscriber
				t.Parallel()
				env := iotdtest.Start(t, server.Options{}, broker.Options{})
				paho := pahoSubscribe(t, env, subSpec{qos: 2, filters: []string{"wq/#"}})
				mosq := mosqSubscribe(t, env, subSpec{qos: 2, filters: []string{"wq/#"}})
				raw := map[packet.QoS]*iotdtest.Client{}
				for _, q := range []packet.QoS{packet.QoS1, packet.QoS2} {
					raw[q] = rawSubscriber(t, env, q, "wq/#")
				}
				w := msg{Topic: "wq/" + kind, Payload: "gone", QoS: willQoS}
				endWithWill(t, env, kind, w, endNetClose)
				expect(t, paho, w)
				expect(t, mosq, w)
				for granted, c := range raw {
					p := c.ReadPublish()
					wantQoS := min(granted, packet.QoS(willQoS))
					if string(p.Topic) != w.Topic || string(p.Payload) != w.Payload || p.QoS != wantQoS || p.Retain || p.Dup {
						t.Fatalf("raw subscriber at QoS %d got %+v, want %s %q at QoS %d, RETAIN 0, DUP 0", granted, p, w.Topic, w.Payload, wantQoS)
					}
					completeRaw(t, c, p)
					c.ExpectNoPublish()
				}
				expectNone(t, env, paho, mosq)
			})
		}
	}
	t.Run("MQTT-3.1.2-17 a retained QoS 2 will reaches a new QoS 2 subscription at QoS 2", func(t *testing.T) {
		t.Parallel()
		env := iotdtest.Start(t, server.Options{}, broker.Options{})
		w := msg{Topic: "wq/retained", Payload: "gone", QoS: 2, Retain: true}
		endWithWill(t, env, willPaho, w, endNetClose)
		iotdtest.Eventually(t, func() bool { return env.Broker.Stats().Retained == 1 }, "the will retained")
		c := rawSubscriber(t, env, packet.QoS2, "wq/#")
		p := c.ReadPublish()
		if string(p.Topic) != w.Topic || string(p.Payload) != w.Payload || p.QoS != packet.QoS2 || !p.Retain {
			t.Fatalf("got %+v, want %s %q at QoS 2 with RETAIN 1", p, w.Topic, w.Payload)
		}
		completeRaw(t, c, p)
		c.ExpectNoPublish()
		r := pahoSubscribe(t, env, subSpec{qos: 2, filters: []string{"wq/#"}})
		expect(t, r, w)
	})
}

// ---- a stuck subscriber ----

// TestStuckSubscriber stops a mosquitto_sub subscribed at QoS 1 with SIGSTOP while a Paho
// subscriber on the same topic keeps up: the stopped one fills its inflight window and then its
// queue, the rest of its deliveries are dropped and counted, the publisher's messages are all
// acknowledged and the Paho subscriber receives every one, in order. Resumed with SIGCONT, the
// stopped one gets what was kept, in order.
func TestStuckSubscriber(t *testing.T) {
	t.Parallel()
	needMosquitto(t)
	const window, queued, n, chunk = 8, 100, 400, 50
	env := iotdtest.Start(t, server.Options{}, broker.Options{MaxInflight: window, MaxQueued: queued})
	stuck := mosqSubscribe(t, env, subSpec{qos: 1, filters: []string{"stuck/t"}}).(*mosqSub)
	stuck.signal(syscall.SIGSTOP)
	t.Cleanup(func() { stuck.signal(syscall.SIGCONT) }) // runs before the SIGTERM of startProc
	waitStopped(t, stuck.proc)
	healthy := pahoSubscribe(t, env, subSpec{qos: 1, filters: []string{"stuck/t"}})

	pub := dialPaho(t, env, newID("pp"))
	for i := range n {
		// The stuck subscriber never holds the publisher up for long: each PUBACK comes within the
		// usual timeout.
		wait(t, pub.Publish("stuck/t", 1, false, strconv.Itoa(i)), "publish")
		if (i+1)%chunk == 0 { // pace the publisher to the healthy subscriber, so only the stuck one overflows
			for j := i + 1 - chunk; j <= i; j++ {
				expect(t, healthy, msg{Topic: "stuck/t", Payload: strconv.Itoa(j), QoS: 1})
			}
		}
	}
	pub.Disconnect(250)
	waitRouted(t, env, pub.id)
	if got, want := env.Broker.Stats().Dropped, uint64(n-window-queued); got != want {
		t.Fatalf("dropped %d deliveries, want %d (all but the window of %d and the queue of %d)", got, want, window, queued)
	}
	env.Logs.WaitFor(t, "level=WARN", "delivery dropped")
	expectNone(t, env, healthy)

	stuck.signal(syscall.SIGCONT)
	for i := range window + queued {
		expect(t, stuck, msg{Topic: "stuck/t", Payload: strconv.Itoa(i), QoS: 1})
	}
	expectNone(t, env, stuck)
}
