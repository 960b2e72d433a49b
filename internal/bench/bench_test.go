package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// checkSane fails the test unless the summary's figures agree with each other.
func checkSane(t *testing.T, s *Summary) {
	t.Helper()
	if !s.OK() {
		var b bytes.Buffer
		s.WriteText(&b)
		t.Fatalf("run failed:\n%s", b.String())
	}
	for _, l := range []Latency{s.Latency, s.AckLatency, s.Connections.Latency} {
		if l.Count == 0 {
			continue
		}
		if !(l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
			t.Errorf("percentiles out of order: %+v", l)
		}
	}
	if s.CPU.UserSeconds+s.CPU.SystemSeconds <= 0 {
		t.Errorf("CPU use %+v, want some", s.CPU)
	}
}

func TestRunScenario(t *testing.T) {
	env := iotdtest.Start(t, server.Options{}, broker.Options{})
	tests := []struct {
		name       string
		o          ScenarioOptions
		wantSent   uint64
		wantExpect uint64
	}{
		{
			name:       "fan-in QoS 0",
			o:          ScenarioOptions{Pub: Publishers{Count: 3, Messages: 200}, Sub: Subscribers{Count: 1}},
			wantSent:   600,
			wantExpect: 600,
		},
		{
			name:       "MQTT-4.3.2-1 fan-in QoS 1 loses nothing",
			o:          ScenarioOptions{Pub: Publishers{Count: 3, Messages: 300, QoS: 1, Inflight: 8}, Sub: Subscribers{Count: 1, QoS: 1}},
			wantSent:   900,
			wantExpect: 900,
		},
		{
			name:       "MQTT-4.3.3-1 fan-in QoS 2 exactly once",
			o:          ScenarioOptions{Pub: Publishers{Count: 2, Messages: 300, QoS: 2, Inflight: 4}, Sub: Subscribers{Count: 1, QoS: 2}},
			wantSent:   600,
			wantExpect: 600,
		},
		{
			name: "fan-out to three subscribers",
			o: ScenarioOptions{Pub: Publishers{Count: 1, Messages: 100, Topic: "fan/x"},
				Sub: Subscribers{Count: 3, Filter: "fan/+"}},
			wantSent:   100,
			wantExpect: 300,
		},
		{
			name: "per-subscriber filters match one publisher each",
			o: ScenarioOptions{Pub: Publishers{Count: 2, Messages: 50, QoS: 1},
				Sub: Subscribers{Count: 2, Filter: "bench/%i", QoS: 1}},
			wantSent:   100,
			wantExpect: 100,
		},
		{
			name:       "rate limited",
			o:          ScenarioOptions{Pub: Publishers{Count: 1, Messages: 20, Rate: 2000, QoS: 1}, Sub: Subscribers{Count: 1, QoS: 1}},
			wantSent:   20,
			wantExpect: 20,
		},
		{
			name: "extra subscriptions installed",
			o: ScenarioOptions{Pub: Publishers{Count: 1, Messages: 50}, Sub: Subscribers{Count: 1},
				ExtraSubs: 250, ExtraPerConn: 100},
			wantSent:   50,
			wantExpect: 50,
		},
		{
			name:       "payload too small to track",
			o:          ScenarioOptions{Pub: Publishers{Count: 1, Messages: 30, Size: 10}, Sub: Subscribers{Count: 1}},
			wantSent:   30,
			wantExpect: 30,
		},
		{
			name:       "payload larger than the read buffer",
			o:          ScenarioOptions{Pub: Publishers{Count: 1, Messages: 5, Size: 100 << 10, QoS: 1}, Sub: Subscribers{Count: 1, QoS: 1}},
			wantSent:   5,
			wantExpect: 5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.o.Addr = env.Addr
			s, err := RunScenario(context.Background(), tt.o)
			if err != nil {
				t.Fatal(err)
			}
			checkSane(t, s)
			if s.Sent != tt.wantSent {
				t.Errorf("sent %d, want %d", s.Sent, tt.wantSent)
			}
			if s.Expected != tt.wantExpect {
				t.Errorf("expected %d, want %d", s.Expected, tt.wantExpect)
			}
			if s.Acked != s.Sent || s.Unacked != 0 {
				t.Errorf("acked %d of %d, unacked %d; want all taken by the broker", s.Acked, s.Sent, s.Unacked)
			}
			if tt.o.Pub.QoS > 0 && s.Lost != 0 {
				t.Errorf("lost %d at QoS %d, want none", s.Lost, tt.o.Pub.QoS)
			}
			if s.Received < s.Expected-s.Lost {
				t.Errorf("received %d, want at least %d", s.Received, s.Expected-s.Lost)
			}
			tracked := tt.o.Pub.Size == 0 || tt.o.Pub.Size >= MinTrackedSize
			if tracked && s.Latency.Count != int64(s.Received) {
				t.Errorf("latency samples %d, want one per delivery (%d)", s.Latency.Count, s.Received)
			}
			if !tracked && s.Latency.Count != 0 {
				t.Errorf("latency samples %d for untracked payloads, want 0", s.Latency.Count)
			}
			if tt.o.Pub.QoS > 0 && s.AckLatency.Count != int64(s.Sent) {
				t.Errorf("ack latency samples %d, want %d", s.AckLatency.Count, s.Sent)
			}
			if s.ExtraSubscriptions != tt.o.ExtraSubs {
				t.Errorf("extra subscriptions %d, want %d", s.ExtraSubscriptions, tt.o.ExtraSubs)
			}
			if s.SentPerSec <= 0 || s.ReceivedPerSec <= 0 {
				t.Errorf("rates %v sent/s, %v received/s; want both positive", s.SentPerSec, s.ReceivedPerSec)
			}
		})
	}
}

func TestRunPub(t *testing.T) {
	env := iotdtest.Start(t, server.Options{}, broker.Options{})
	for _, qos := range []packet.QoS{0, 1, 2} {
		t.Run("QoS "+string(rune('0'+qos)), func(t *testing.T) {
			s, err := RunPub(context.Background(), PubOptions{
				Target:     Target{Addr: env.Addr},
				Publishers: Publishers{Count: 2, Messages: 500, QoS: qos},
			})
			if err != nil {
				t.Fatal(err)
			}
			checkSane(t, s)
			if s.Sent != 1000 || s.Publishers != 2 || s.Subscribers != 0 || s.Expected != 0 {
				t.Errorf("sent %d by %d publishers, %d subscribers, expected %d; want 1000 by 2, 0, 0", s.Sent, s.Publishers, s.Subscribers, s.Expected)
			}
			if qos > 0 && s.Acked != 1000 {
				t.Errorf("acked %d, want 1000", s.Acked)
			}
		})
	}
	t.Run("bounded by duration", func(t *testing.T) {
		s, err := RunPub(context.Background(), PubOptions{
			Target:     Target{Addr: env.Addr},
			Publishers: Publishers{Count: 1, Rate: 1000, QoS: 1},
			Duration:   20 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		checkSane(t, s)
		if s.Sent == 0 || s.Acked != s.Sent {
			t.Errorf("sent %d, acked %d; want some, all acknowledged", s.Sent, s.Acked)
		}
	})
}

func TestRunSub(t *testing.T) {
	env := iotdtest.Start(t, server.Options{}, broker.Options{})
	type result struct {
		s   *Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := RunSub(context.Background(), SubOptions{
			Target:      Target{Addr: env.Addr},
			Subscribers: Subscribers{Count: 2, Filter: "ext/#", QoS: 1, Messages: 200},
			Duration:    iotdtest.Timeout,
		})
		done <- result{s, err}
	}()
	iotdtest.Eventually(t, func() bool { return env.Broker.Stats().Subscriptions == 2 }, "two subscriptions")
	p, err := RunPub(context.Background(), PubOptions{
		Target:     Target{Addr: env.Addr},
		Publishers: Publishers{Count: 1, Messages: 100, Topic: "ext/1", QoS: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkSane(t, p)
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	checkSane(t, res.s)
	if res.s.Received != 200 || res.s.Latency.Count != 200 || res.s.Expected != 0 {
		t.Errorf("received %d with %d latency samples, expected %d; want 200, 200, 0 (unknown)", res.s.Received, res.s.Latency.Count, res.s.Expected)
	}
}

func TestRunConn(t *testing.T) {
	env := iotdtest.Start(t, server.Options{}, broker.Options{})
	s, err := RunConn(context.Background(), ConnOptions{Target: Target{Addr: env.Addr, Workers: 4}, Count: 30, Hold: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	checkSane(t, s)
	c := s.Connections
	if c.Attempted != 30 || c.Connected != 30 || c.Failed != 0 || c.ClosedByBroker != 0 || c.PerSecond <= 0 || c.Latency.Count != 30 {
		t.Errorf("connections %+v, want 30 of 30, none failed or closed, a rate and 30 latency samples", c)
	}

	t.Run("interval and spread source addresses", func(t *testing.T) {
		set, err := OpenConns(context.Background(), ConnOptions{
			Target: Target{Addr: env.Addr, Interval: 100 * time.Microsecond, SpreadAbove: 2}, Count: 5,
		})
		if err != nil {
			t.Fatal(err)
		}
		if !set.r.spread {
			t.Error("spread is off, want on for 5 connections above 2")
		}
		seen := map[string]bool{}
		for _, c := range set.clients {
			host, _, _ := net.SplitHostPort(c.nc.LocalAddr().String())
			seen[host] = true
		}
		if len(seen) != 5 {
			t.Errorf("source addresses %v, want 5 different ones", seen)
		}
		if n, c := set.Alive(), set.Connected(); n != 5 || c != 5 {
			t.Errorf("alive %d, connected %d; want 5, 5", n, c)
		}
		s := set.Close()
		checkSane(t, s)
		if s2 := set.Close(); s2.Connections.Connected != 5 {
			t.Errorf("second Close: connected %d, want 5", s2.Connections.Connected)
		}
	})

	t.Run("keep-alive pings keep quiet connections open", func(t *testing.T) {
		// A keep-alive under a second goes out as 0 (none) in CONNECT, while the generator still
		// pings on its schedule: the test sees the pings without waiting seconds.
		ka := 20 * time.Millisecond
		var progress syncBuffer
		tg := Target{Addr: env.Addr, KeepAlive: ka, Progress: &progress, ProgressInterval: time.Millisecond}
		s, err := RunConn(context.Background(), ConnOptions{Target: tg, Count: 3, Hold: 10 * ka})
		if err != nil {
			t.Fatal(err)
		}
		checkSane(t, s)
		sub, err := RunSub(context.Background(), SubOptions{Target: tg, Subscribers: Subscribers{Count: 1}, Duration: 10 * ka})
		if err != nil {
			t.Fatal(err)
		}
		checkSane(t, sub)
		pub, err := RunPub(context.Background(), PubOptions{Target: tg, Publishers: Publishers{Count: 1, Rate: 1 / (5 * ka.Seconds()), Messages: 2}})
		if err != nil {
			t.Fatal(err)
		}
		checkSane(t, pub)
		if !strings.Contains(progress.String(), "conns 3/3") || !strings.Contains(progress.String(), "sent ") {
			t.Errorf("progress lines %q, want conn and load lines", progress.String())
		}
	})
}

// syncBuffer is a bytes.Buffer safe for the progress goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeBroker serves each accepted connection with handle until the test ends.
func fakeBroker(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); handle(c) }()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// answer reads packets from c and writes what reply returns for each, until c fails.
func answer(c net.Conn, reply func(p packet.Packet) []byte) {
	r := packet.NewReader(c, 0)
	for {
		p, err := r.ReadPacket(packet.Version311)
		if err != nil {
			return
		}
		if out := reply(p); out != nil {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
	}
}

var connackOK = (&packet.Connack{}).Append(nil)

func TestFailures(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	refuse := fakeBroker(t, func(c net.Conn) {
		answer(c, func(packet.Packet) []byte {
			return (&packet.Connack{ReturnCode: packet.RefusedNotAuthorized}).Append(nil)
		})
	})
	notConnack := fakeBroker(t, func(c net.Conn) {
		answer(c, func(packet.Packet) []byte { return (&packet.Pingresp{}).Append(nil) })
	})
	garbage := fakeBroker(t, func(c net.Conn) {
		answer(c, func(packet.Packet) []byte { return []byte{0x20, 0x03, 0, 0, 0} })
	})
	hangUp := fakeBroker(t, func(c net.Conn) { c.Close() })
	subRefused := fakeBroker(t, func(c net.Conn) {
		answer(c, func(p packet.Packet) []byte {
			switch p := p.(type) {
			case *packet.Connect:
				return connackOK
			case *packet.Subscribe:
				return (&packet.Suback{PacketID: p.PacketID, ReturnCodes: []byte{0x80}}).Append(nil)
			}
			return nil
		})
	})
	notSuback := fakeBroker(t, func(c net.Conn) {
		answer(c, func(p packet.Packet) []byte {
			if _, ok := p.(*packet.Connect); ok {
				return connackOK
			}
			return (&packet.Pingresp{}).Append(nil)
		})
	})
	badSuback := fakeBroker(t, func(c net.Conn) {
		answer(c, func(p packet.Packet) []byte {
			if _, ok := p.(*packet.Connect); ok {
				return connackOK
			}
			return []byte{0x90, 0x01, 0}
		})
	})
	// dropAfterConnect accepts, then closes once the first PUBLISH or SUBSCRIBE arrives.
	dropAfterConnect := fakeBroker(t, func(c net.Conn) {
		answer(c, func(p packet.Packet) []byte {
			if _, ok := p.(*packet.Connect); ok {
				return connackOK
			}
			c.Close()
			return nil
		})
	})
	// wrongAcks answers every QoS 1 PUBLISH with a PUBACK for a packet id never used, then a
	// PUBREC, then a packet a client never gets.
	wrongAcks := fakeBroker(t, func(c net.Conn) {
		answer(c, func(p packet.Packet) []byte {
			switch p.(type) {
			case *packet.Connect:
				return connackOK
			case *packet.Publish:
				out := (&packet.Puback{PacketID: 999}).Append(nil)
				out = (&packet.Pubrec{PacketID: 1}).Append(out)
				out = (&packet.Pubcomp{PacketID: 1}).Append(out)
				out = (&packet.Puback{PacketID: 2}).Append(out)
				out = append(out, 0x40, 0x03, 0, 1, 0) // PUBACK with a wrong length
				return (&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a"}}}).Append(out)
			}
			return nil
		})
	})

	// blackHole accepts connections, subscriptions and messages, answers PINGREQ, and delivers
	// nothing.
	blackHole := fakeBroker(t, func(c net.Conn) {
		answer(c, func(p packet.Packet) []byte {
			switch p := p.(type) {
			case *packet.Connect:
				return connackOK
			case *packet.Subscribe:
				return (&packet.Suback{PacketID: p.PacketID, ReturnCodes: []byte{0}}).Append(nil)
			case *packet.Pingreq:
				return (&packet.Pingresp{}).Append(nil)
			}
			return nil
		})
	})

	tests := []struct {
		name string
		run  func() (*Summary, error)
		want string // in an error sample
	}{
		{"deliveries missing past MaxDrain", func() (*Summary, error) {
			return RunScenario(context.Background(), ScenarioOptions{Target: Target{Addr: blackHole}, Pub: Publishers{Messages: 5},
				Drain: time.Hour, MaxDrain: 200 * time.Millisecond})
		}, "5 missing deliveries"},
		{"dial refused", func() (*Summary, error) {
			return RunConn(context.Background(), ConnOptions{Target: Target{Addr: closedAddr}, Count: 2, Hold: time.Millisecond})
		}, "dial"},
		{"CONNACK refused", func() (*Summary, error) {
			return RunPub(context.Background(), PubOptions{Target: Target{Addr: refuse}, Publishers: Publishers{Messages: 1}})
		}, "CONNACK refused"},
		{"not a CONNACK", func() (*Summary, error) {
			return RunPub(context.Background(), PubOptions{Target: Target{Addr: notConnack}, Publishers: Publishers{Messages: 1}})
		}, "want CONNACK"},
		{"malformed CONNACK", func() (*Summary, error) {
			return RunPub(context.Background(), PubOptions{Target: Target{Addr: garbage}, Publishers: Publishers{Messages: 1}})
		}, "decode CONNACK"},
		{"hang-up before CONNACK", func() (*Summary, error) {
			return RunPub(context.Background(), PubOptions{Target: Target{Addr: hangUp}, Publishers: Publishers{Messages: 1}})
		}, "read CONNACK"},
		{"SUBACK refused", func() (*Summary, error) {
			return RunSub(context.Background(), SubOptions{Target: Target{Addr: subRefused}, Subscribers: Subscribers{Messages: 1}})
		}, "SUBACK refused"},
		{"not a SUBACK", func() (*Summary, error) {
			return RunSub(context.Background(), SubOptions{Target: Target{Addr: notSuback}, Subscribers: Subscribers{Messages: 1}})
		}, "want SUBACK"},
		{"malformed SUBACK", func() (*Summary, error) {
			return RunSub(context.Background(), SubOptions{Target: Target{Addr: badSuback}, Subscribers: Subscribers{Messages: 1}})
		}, "decode SUBACK"},
		{"closed by the broker while subscribing", func() (*Summary, error) {
			return RunSub(context.Background(), SubOptions{Target: Target{Addr: dropAfterConnect}, Subscribers: Subscribers{Messages: 1}})
		}, "read SUBACK"},
		{"closed by the broker while publishing", func() (*Summary, error) {
			return RunPub(context.Background(), PubOptions{Target: Target{Addr: dropAfterConnect}, Publishers: Publishers{Messages: 1000000, QoS: 1}, Drain: time.Millisecond})
		}, "by the broker"},
		{"QoS 0 publisher closed by the broker", func() (*Summary, error) {
			return RunPub(context.Background(), PubOptions{Target: Target{Addr: dropAfterConnect}, Duration: iotdtest.Timeout})
		}, ""},
		{"wrong acknowledgements", func() (*Summary, error) {
			return RunPub(context.Background(), PubOptions{Target: Target{Addr: wrongAcks}, Publishers: Publishers{Messages: 1, QoS: 1}, Drain: time.Millisecond})
		}, "never sent"},
		{"wrong acknowledgements at QoS 2", func() (*Summary, error) {
			return RunPub(context.Background(), PubOptions{Target: Target{Addr: wrongAcks}, Publishers: Publishers{Messages: 1, QoS: 2}, Drain: time.Millisecond})
		}, "unexpected PUBACK"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tt.run()
			if err != nil {
				t.Fatal(err)
			}
			if s.OK() || s.Errors == 0 {
				t.Fatalf("OK %v with %d errors, want a failed run", s.OK(), s.Errors)
			}
			if !strings.Contains(strings.Join(s.ErrorSamples, "\n"), tt.want) {
				t.Errorf("errors %q, want one containing %q", s.ErrorSamples, tt.want)
			}
		})
	}

	t.Run("QoS 0 messages the broker never read are not counted as taken", func(t *testing.T) {
		// silent accepts the connection and never answers anything else, PINGREQ included.
		silent := fakeBroker(t, func(c net.Conn) {
			answer(c, func(p packet.Packet) []byte {
				if _, ok := p.(*packet.Connect); ok {
					return connackOK
				}
				return nil
			})
		})
		s, err := RunPub(context.Background(), PubOptions{Target: Target{Addr: silent}, Publishers: Publishers{Messages: 5}, MaxDrain: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if !s.OK() || s.Sent != 5 || s.Acked != 0 || s.Unacked != 5 {
			t.Errorf("OK %v, sent %d, acked %d, unacked %d; want true, 5, 0, 5", s.OK(), s.Sent, s.Acked, s.Unacked)
		}
		var b bytes.Buffer
		s.WriteText(&b)
		if !strings.Contains(b.String(), "5 not yet read by the broker") {
			t.Errorf("text output lacks the unread count:\n%s", b.String())
		}
	})

	t.Run("the duration bounds a publisher the broker stopped reading", func(t *testing.T) {
		release := make(chan struct{})
		stalled := fakeBroker(t, func(c net.Conn) {
			r := packet.NewReader(c, 0)
			if _, err := r.ReadPacket(packet.Version311); err != nil {
				return
			}
			c.Write(connackOK)
			<-release // read nothing more: the publisher's socket buffers fill up
		})
		t.Cleanup(func() { close(release) }) // runs before fakeBroker's cleanup
		s, err := RunPub(context.Background(), PubOptions{Target: Target{Addr: stalled}, Duration: 50 * time.Millisecond, MaxDrain: time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if !s.OK() || s.Sent == 0 || s.Acked != 0 {
			t.Errorf("OK %v, sent %d, acked %d, errors %q; want a clean run, some sent, none known taken", s.OK(), s.Sent, s.Acked, s.ErrorSamples)
		}
	})

	t.Run("connection closed by the broker while held", func(t *testing.T) {
		set, err := OpenConns(context.Background(), ConnOptions{Target: Target{Addr: dropAfterConnect}, Count: 2})
		if err != nil {
			t.Fatal(err)
		}
		// Any packet makes this broker hang up.
		set.clients[0].write([]byte{0xc0, 0})
		iotdtest.Eventually(t, func() bool { return set.Alive() == 1 }, "one connection closed")
		s := set.Close()
		if s.Connections.ClosedByBroker != 1 || s.OK() {
			t.Errorf("closed by broker %d, OK %v; want 1, false", s.Connections.ClosedByBroker, s.OK())
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		s, err := RunConn(ctx, ConnOptions{Target: Target{Addr: closedAddr}, Count: 3})
		if err != nil {
			t.Fatal(err)
		}
		if s.Connections.Attempted != 0 {
			t.Errorf("attempted %d after cancel, want 0", s.Connections.Attempted)
		}
	})
}

// TestCancelDuringRun stops a run without bounds through its context.
func TestCancelDuringRun(t *testing.T) {
	env := iotdtest.Start(t, server.Options{}, broker.Options{})
	for _, mode := range []string{"pub", "sub", "scenario"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			var progress syncBuffer
			tg := Target{Addr: env.Addr, Progress: &progress, ProgressInterval: time.Millisecond}
			done := make(chan *Summary, 1)
			go func() {
				var s *Summary
				switch mode {
				case "pub":
					s, _ = RunPub(ctx, PubOptions{Target: tg, Publishers: Publishers{QoS: 1}, Duration: time.Hour})
				case "sub":
					s, _ = RunSub(ctx, SubOptions{Target: tg, Duration: time.Hour})
				default:
					s, _ = RunScenario(ctx, ScenarioOptions{Target: tg, Pub: Publishers{Rate: 100}, Duration: time.Hour})
				}
				done <- s
			}()
			iotdtest.Eventually(t, func() bool {
				return strings.Contains(progress.String(), "conns 1") || strings.Contains(progress.String(), "conns 2")
			}, "a progress line with the connections up")
			cancel()
			s := <-done
			if s.Connections.Connected == 0 {
				t.Errorf("connected %d, want the run's connections", s.Connections.Connected)
			}
		})
	}
}

func TestInvalidOptions(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func() error
		want string
	}{
		{"addr", func() error { _, err := RunPub(ctx, PubOptions{Target: Target{Addr: "nohost"}}); return err }, "addr"},
		{"keep-alive", func() error {
			_, err := RunPub(ctx, PubOptions{Target: Target{KeepAlive: -time.Second}})
			return err
		}, "keep-alive"},
		{"interval", func() error { _, err := RunPub(ctx, PubOptions{Target: Target{Interval: -1}}); return err }, "interval"},
		{"publishers", func() error { _, err := RunPub(ctx, PubOptions{Publishers: Publishers{Count: -1}}); return err }, "publishers"},
		{"rate", func() error { _, err := RunPub(ctx, PubOptions{Publishers: Publishers{Rate: -1}}); return err }, "rate"},
		{"qos", func() error { _, err := RunPub(ctx, PubOptions{Publishers: Publishers{QoS: 3}}); return err }, "qos"},
		{"size", func() error { _, err := RunPub(ctx, PubOptions{Publishers: Publishers{Size: -1}}); return err }, "size"},
		{"messages", func() error { _, err := RunPub(ctx, PubOptions{Publishers: Publishers{Messages: -1}}); return err }, "messages"},
		{"inflight", func() error { _, err := RunPub(ctx, PubOptions{Publishers: Publishers{Inflight: 70000}}); return err }, "inflight"},
		{"wildcard topic", func() error { _, err := RunPub(ctx, PubOptions{Publishers: Publishers{Topic: "a/+"}}); return err }, "wildcards"},
		{"empty topic level", func() error {
			_, err := RunPub(ctx, PubOptions{Publishers: Publishers{Topic: "a\x00b"}})
			return err
		}, "topic"},
		{"duration", func() error { _, err := RunPub(ctx, PubOptions{Duration: -1}); return err }, "duration"},
		{"drain", func() error { _, err := RunPub(ctx, PubOptions{Drain: -1}); return err }, "drain"},
		{"subscribers", func() error { _, err := RunSub(ctx, SubOptions{Subscribers: Subscribers{Count: -1}}); return err }, "subscribers"},
		{"sub qos", func() error { _, err := RunSub(ctx, SubOptions{Subscribers: Subscribers{QoS: 3}}); return err }, "qos"},
		{"sub messages", func() error { _, err := RunSub(ctx, SubOptions{Subscribers: Subscribers{Messages: -1}}); return err }, "messages"},
		{"filter", func() error { _, err := RunSub(ctx, SubOptions{Subscribers: Subscribers{Filter: "a/#/b"}}); return err }, "filter"},
		{"extra subs", func() error { _, err := RunScenario(ctx, ScenarioOptions{ExtraSubs: -1}); return err }, "extra"},
		{"extra filter matches", func() error {
			_, err := RunScenario(ctx, ScenarioOptions{ExtraSubs: 1, ExtraFilter: "bench/+"})
			return err
		}, "must not match"},
		{"extra filter invalid", func() error {
			_, err := RunScenario(ctx, ScenarioOptions{ExtraSubs: 1, ExtraFilter: "x/#/y"})
			return err
		}, "extra filter"},
		{"connections", func() error { _, err := RunConn(ctx, ConnOptions{Count: -1}); return err }, "connections"},
		{"hold", func() error { _, err := RunConn(ctx, ConnOptions{Hold: -1}); return err }, "hold"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestSeqTracker(t *testing.T) {
	tests := []struct {
		name       string
		seqs       []uint64
		wantUnique uint64
		wantDups   uint64
		wantBase   uint64
	}{
		{"in order", seq(0, 200), 200, 0, 192},
		{"duplicates", append(seq(0, 70), 3, 69, 69), 70, 3, 64},
		{"out of order", []uint64{5, 1, 0, 2, 4, 3}, 6, 0, 0},
		{"hole", append(seq(0, 10), seq(11, 300)...), 299, 0, 0},
		{"far ahead gives up on old holes", []uint64{1, 64 * maxWindowWords * 3}, 2, 0, 64 * (maxWindowWords*2 + 1)},
		{"late after giving up counts as duplicate", []uint64{1, 64 * maxWindowWords * 3, 0}, 2, 1, 64 * (maxWindowWords*2 + 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr seqTracker
			for _, s := range tt.seqs {
				tr.add(s)
			}
			if tr.unique != tt.wantUnique || tr.dups != tt.wantDups || tr.base != tt.wantBase {
				t.Errorf("unique %d dups %d base %d, want %d %d %d", tr.unique, tr.dups, tr.base, tt.wantUnique, tt.wantDups, tt.wantBase)
			}
		})
	}
}

func seq(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func TestPayload(t *testing.T) {
	p := newPayload(MinTrackedSize + 5)
	want := stamp{tag: 7, sent: 123456789, pub: 3, seq: 1 << 40}
	putStamp(p, want)
	got, ok := readStamp(p)
	if !ok || got != want {
		t.Errorf("readStamp = %+v, %v; want %+v, true", got, ok, want)
	}
	for _, bad := range [][]byte{newPayload(MinTrackedSize - 1), append([]byte("xx"), p[2:]...)} {
		if _, ok := readStamp(bad); ok {
			t.Errorf("readStamp(%q) ok, want not tracked", bad)
		}
	}
}

func TestSummaryOutput(t *testing.T) {
	s := &Summary{
		Mode: "scenario", Addr: "127.0.0.1:1", Publishers: 2, Subscribers: 1, PubQoS: 1, SubQoS: 1,
		Sent: 10, Acked: 10, Received: 9, Expected: 10, Lost: 1, LostPct: 10, Duplicates: 1,
		ExtraSubscriptions: 5, SubscribePerSec: 12345,
		Connections:  Connections{Attempted: 3, Connected: 3, PerSecond: 2e6, ClosedByBroker: 1, Latency: Latency{Count: 3, P50: 1500, P99: 2e6, Max: 2e6}},
		Latency:      Latency{Count: 9, P50: 10, P90: 20, P99: 30, P999: 40, Max: 50},
		ErrorSamples: []string{"boom"}, Errors: 1,
	}
	var b bytes.Buffer
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"2.00M/s", "1.50ms", "2.00s", "12.3k/s", "1 lost", "1 duplicates", "boom", "FAILED", "closed by the broker"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text output lacks %q:\n%s", want, b.String())
		}
	}
	s2 := &Summary{Mode: "sub", Subscribers: 1, Duplicates: 2}
	b.Reset()
	s2.WriteText(&b)
	if !strings.Contains(b.String(), "2 duplicates") {
		t.Errorf("text output lacks duplicates:\n%s", b.String())
	}
	b.Reset()
	if err := s.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Summary
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Lost != 1 || back.Latency.P99 != 30 || back.Connections.Connected != 3 {
		t.Errorf("JSON round trip %+v, want the same figures", back)
	}
	if err := s.WriteText(failWriter{}); err == nil {
		t.Error("WriteText to a failing writer: nil error")
	}

	okTests := []struct {
		name string
		s    Summary
		want bool
	}{
		{"clean", Summary{}, true},
		{"errors", Summary{Errors: 1}, false},
		{"QoS 0 loss is reported, not failed", Summary{Expected: 10, Lost: 5}, true},
		{"QoS 1 loss fails", Summary{Expected: 10, Lost: 1, PubQoS: 1, SubQoS: 1}, false},
		{"QoS 1 published, QoS 0 subscribed", Summary{Expected: 10, Lost: 1, PubQoS: 1, SubQoS: 0}, true},
	}
	for _, tt := range okTests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.OK(); got != tt.want {
				t.Errorf("OK() = %v, want %v", got, tt.want)
			}
		})
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("write failed") }

func TestHelpers(t *testing.T) {
	loop := []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:1883", true}, {"127.9.9.9:1", true}, {"localhost:1", true},
		{"10.0.0.1:1883", false}, {"[::1]:1883", false}, {"nonsense", false},
	}
	for _, tt := range loop {
		if got := isLoopback(tt.addr); got != tt.want {
			t.Errorf("isLoopback(%q) = %v, want %v", tt.addr, got, tt.want)
		}
	}
	if n, err := RaiseFileLimit(); err != nil || n == 0 {
		t.Errorf("RaiseFileLimit = %d, %v; want a limit", n, err)
	}
	if a := sourceAddr(251).IP.String(); a != "127.0.0.3" {
		t.Errorf("sourceAddr(251) = %s, want 127.0.0.3", a)
	}
	for _, v := range []struct {
		in   float64
		want string
	}{{5, "5"}, {12345, "12.3k"}, {2.5e6, "2.50M"}} {
		if got := human(v.in); got != v.want {
			t.Errorf("human(%v) = %q, want %q", v.in, got, v.want)
		}
	}
	if got := expand("a/%i/b/%i", 7); got != "a/7/b/7" {
		t.Errorf("expand = %q", got)
	}
	var fr frameReader
	if err := fr.fill(eofConn{}); !errors.Is(err, io.EOF) {
		t.Errorf("fill on a closed stream: %v, want EOF", err)
	}
}

// eofConn is a net.Conn whose reads end at once.
type eofConn struct{ net.Conn }

func (eofConn) Read([]byte) (int, error) { return 0, io.EOF }
