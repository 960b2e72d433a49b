package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

func TestBadInput(t *testing.T) {
	env := iotdtest.Start(t, server.Options{MaxPacketSize: 1024}, broker.Options{})
	// A bystander proves that nothing done to other connections affects it.
	by := iotdtest.Dial(t, env.Addr)
	by.MustConnect("bystander", true)
	by.Subscribe(1, 0, "by/#")
	check := func(t *testing.T) {
		t.Helper()
		p := iotdtest.Dial(t, env.Addr)
		p.MustConnect("checker", true)
		p.Publish("by/x", "alive", false)
		if m := by.ReadPublish(); string(m.Payload) != "alive" {
			t.Fatalf("bystander got %q", m.Payload)
		}
	}
	cases := []struct {
		name    string
		connect bool   // send a valid CONNECT first
		raw     []byte // then this
		log     string // a log line that must appear
	}{
		{"garbage bytes before CONNECT", false, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), "level=WARN"},
		{"MQTT-2.2.2-2 reserved type 0", true, []byte{0x00, 0x00}, "level=WARN"},
		{"reserved type 15", true, []byte{0xf0, 0x00}, "level=WARN"},
		{"MQTT-2.2.2-2 PINGREQ with flags", true, []byte{0xc1, 0x00}, "level=WARN"},
		{"MQTT-3.8.1-1 SUBSCRIBE with flags 0000", true, []byte{0x80, 6, 0, 1, 0, 1, 'a', 0}, "level=WARN"},
		{"MQTT-3.10.1-1 UNSUBSCRIBE with flags 0000", true, []byte{0xa0, 5, 0, 1, 0, 1, 'a'}, "level=WARN"},
		{"MQTT-3.6.1-1 PUBREL with flags 0000", true, []byte{0x60, 2, 0, 1}, "level=WARN"},
		{"MQTT-3.3.1-4 PUBLISH QoS 3", true, []byte{0x36, 5, 0, 1, 'a', 0, 1}, "level=WARN"},
		{"MQTT-3.8.3-3 SUBSCRIBE without filters", true, []byte{0x82, 2, 0, 1}, "level=WARN"},
		{"MQTT-3.8.3-4 SUBSCRIBE requested QoS 3", true, []byte{0x82, 6, 0, 1, 0, 1, 'a', 3}, "level=WARN"},
		{"MQTT-3.10.3-2 UNSUBSCRIBE without filters", true, []byte{0xa2, 2, 0, 1}, "level=WARN"},
		{"MQTT-2.3.1-1 SUBSCRIBE packet id 0", true, []byte{0x82, 6, 0, 0, 0, 1, 'a', 0}, "level=WARN"},
		{"MQTT-1.5.3-1 topic with invalid UTF-8", true, []byte{0x30, 5, 0, 2, 0xc3, 0x28, 'x'}, "level=WARN"},
		{"MQTT-1.5.3-2 topic with U+0000", true, []byte{0x30, 5, 0, 2, 'a', 0, 'x'}, "level=WARN"},
		{"MQTT-1.5.3-1 filter with a surrogate", true, []byte{0x82, 8, 0, 1, 0, 3, 0xed, 0xa0, 0x80, 0}, "level=WARN"},
		{"remaining length varint over 4 bytes", true, []byte{0x30, 0xff, 0xff, 0xff, 0xff, 0x01}, "level=WARN"},
		{"oversized packet rejected from its header", true, []byte{0x30, 0x80, 0x80, 0x40}, "larger than max_packet_size"},
		{"oversized CONNECT", false, []byte{0x10, 0x80, 0x10}, "larger than max_packet_size"},
		{"truncated field inside a packet", true, []byte{0x82, 5, 0, 1, 0, 9, 'a'}, "level=WARN"},
		{"DISCONNECT with a body", true, []byte{0xe0, 1, 0}, "level=WARN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := iotdtest.Dial(t, env.Addr)
			if tc.connect {
				c.MustConnect("victim", true)
			}
			c.SendRaw(tc.raw)
			c.ExpectClosed()
			env.Logs.WaitFor(t, tc.log)
			check(t)
		})
	}
	t.Run("oversized PUBLISH is refused before its body arrives", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("big", true)
		// Announce 2 KiB (over the 1 KiB maximum) and send only the header: the close must not wait.
		c.SendRaw([]byte{0x30, 0x80, 0x10})
		c.ExpectClosed()
	})
	check(t)
}

func TestPartialInput(t *testing.T) {
	env := start(t)
	sub := iotdtest.Dial(t, env.Addr)
	sub.MustConnect("sub", true)
	sub.Subscribe(1, 0, "p/#")
	t.Run("packets written one byte at a time", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		var b []byte
		b = (&packet.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "slow", CleanSession: true, KeepAlive: 60}).Append(b)
		b = (&packet.Publish{Topic: []byte("p/1"), Payload: []byte("trickled")}).Append(b)
		for i := range b {
			c.SendRaw(b[i : i+1])
		}
		if _, ok := c.Read().(*packet.Connack); !ok {
			t.Fatal("no CONNACK")
		}
		if p := sub.ReadPublish(); string(p.Payload) != "trickled" {
			t.Fatalf("got %q", p.Payload)
		}
	})
	t.Run("many packets in one write", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		var b []byte
		b = (&packet.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "burst", CleanSession: true}).Append(b)
		for i := 0; i < 500; i++ {
			b = (&packet.Publish{Topic: []byte("p/burst"), Payload: []byte{byte(i)}}).Append(b)
		}
		c.SendRaw(b)
		c.Read()
		for i := 0; i < 500; i++ {
			if p := sub.ReadPublish(); p.Payload[0] != byte(i) {
				t.Fatalf("message %d out of order: got %d", i, p.Payload[0])
			}
		}
	})
	t.Run("packets larger than the read buffer, in chunks", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("large", true)
		payload := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 KB
		b := (&packet.Publish{Topic: []byte("p/large"), Payload: payload}).Append(nil)
		b = (&packet.Publish{Topic: []byte("p/after"), Payload: []byte("next")}).Append(b)
		for len(b) > 0 {
			n := min(len(b), 7000)
			c.SendRaw(b[:n])
			b = b[n:]
		}
		if p := sub.ReadPublish(); !bytes.Equal(p.Payload, payload) {
			t.Fatalf("large payload corrupted: %d bytes", len(p.Payload))
		}
		if p := sub.ReadPublish(); string(p.Payload) != "next" {
			t.Fatalf("got %q", p.Payload)
		}
	})
}

func TestConnectionFlood(t *testing.T) {
	env := iotdtest.Start(t, server.Options{MaxConnections: 50, ConnectTimeout: 500 * time.Millisecond, Tick: 20 * time.Millisecond}, broker.Options{})
	keep := iotdtest.Dial(t, env.Addr)
	keep.MustConnect("keep", true)
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for i := 0; i < 300; i++ {
		c, err := net.Dial("tcp", env.Addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		flood = append(flood, c)
	}
	env.Logs.WaitFor(t, "level=WARN", "max_connections reached")
	keep.Ping()
	iotdtest.Eventually(t, func() bool { return env.Server.Stats().Open <= 50 }, "at most 50 open")
	// The silent flood is reaped by the connect timeout; then new clients get in again.
	iotdtest.Eventually(t, func() bool { return env.Server.Stats().Open == 1 }, "flood reaped, open=%d", env.Server.Stats().Open)
	c := iotdtest.Dial(t, env.Addr)
	c.MustConnect("after", true)
	keep.Ping()
}

func TestSlowConsumer(t *testing.T) {
	env := iotdtest.Start(t, server.Options{MaxPendingBytes: 64 << 10}, broker.Options{})
	stuck := iotdtest.Dial(t, env.Addr)
	stuck.Conn.(*net.TCPConn).SetReadBuffer(4096)
	stuck.MustConnect("stuck", true)
	stuck.Subscribe(1, 0, "s/#")
	fast := iotdtest.Dial(t, env.Addr)
	fast.MustConnect("fast", true)
	fast.Subscribe(1, 0, "s/#")
	pub := iotdtest.Dial(t, env.Addr)
	pub.MustConnect("pub", true)
	payload := strings.Repeat("x", 1000)
	const n = 12000
	// stuck never reads: its socket buffers fill, then its pending output, then QoS 0 is dropped.
	done := make(chan struct{})
	got := 0
	go func() {
		defer close(done)
		for got < n {
			p, err := fast.TryRead(iotdtest.Timeout)
			if err != nil {
				return
			}
			if _, ok := p.(*packet.Publish); ok {
				got++
			}
		}
	}()
	for i := 0; i < n; i++ {
		pub.Publish("s/1", payload, false)
	}
	pub.Ping() // the publisher is never blocked by the stuck subscriber
	<-done
	if got != n {
		t.Fatalf("fast subscriber got %d of %d", got, n)
	}
	iotdtest.Eventually(t, func() bool { return env.Broker.Stats().Dropped > 0 }, "drops counted for the stuck subscriber")
	env.Logs.WaitFor(t, "level=WARN", "slow consumer", "client_id=stuck")
}

func TestShutdown(t *testing.T) {
	logs := &iotdtest.Logs{}
	b := broker.New(broker.Options{})
	s, err := server.New(b, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln, "t") }()
	_ = logs
	w := iotdtest.Dial(t, ln.Addr().String())
	w.MustConnect("watch", true)
	w.Subscribe(1, 0, "will")
	c := iotdtest.Dial(t, ln.Addr().String())
	c.Connect(&packet.Connect{ClientID: "c", CleanSession: true, KeepAlive: 60, Will: &packet.Will{Topic: "will", Payload: []byte("bye")}})
	w.Ping()
	ctx, cancel := context.WithTimeout(context.Background(), iotdtest.Timeout)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	c.ExpectClosed()
	if s.Stats().Open != 0 {
		t.Fatalf("open %d after shutdown", s.Stats().Open)
	}
	if err := s.Serve(ln, "again"); !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	if err := s.Shutdown(ctx); !errors.Is(err, server.ErrServerClosed) {
		t.Fatalf("second Shutdown: %v", err)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("listener still accepting")
	}
}

func TestSlowConsumerDisconnected(t *testing.T) {
	env := iotdtest.Start(t, server.Options{MaxPendingBytes: 16 << 10}, broker.Options{})
	// A client that publishes at QoS 1 and never reads its PUBACKs: acknowledgements are never
	// dropped, so once its pending output passes four times the limit it is disconnected.
	c := iotdtest.Dial(t, env.Addr)
	c.Conn.(*net.TCPConn).SetReadBuffer(4096)
	c.MustConnect("deaf", true)
	var batch []byte
	for i := 0; i < 64<<10; i++ {
		batch = (&packet.Publish{Topic: []byte("nobody/listens"), QoS: 1, PacketID: uint16(i%60000 + 1)}).Append(batch)
	}
	for i := 0; i < 40 && env.Server.Stats().Open > 0; i++ {
		if _, err := c.Conn.Write(batch); err != nil {
			break // closed by the server
		}
	}
	env.Logs.WaitFor(t, "level=WARN", "slow consumer", "client_id=deaf")
	iotdtest.Eventually(t, func() bool { return env.Server.Stats().Open == 0 }, "deaf client disconnected")
	other := iotdtest.Dial(t, env.Addr)
	other.MustConnect("other", true)
	other.Ping()
}

func TestStuckSubscriberQoS1(t *testing.T) {
	env := iotdtest.Start(t, server.Options{}, broker.Options{MaxInflight: 8, MaxQueued: 100})
	stuck := iotdtest.Dial(t, env.Addr)
	stuck.MustConnect("stuck", true)
	stuck.Subscribe(1, 1, "s/#") // never acknowledges
	fast := iotdtest.Dial(t, env.Addr)
	fast.MustConnect("fast", true)
	fast.Subscribe(1, 1, "s/#")
	pub := iotdtest.Dial(t, env.Addr)
	pub.MustConnect("pub", true)
	const n, chunk = 1000, 50
	received := make(chan string, n)
	go func() { // the healthy subscriber reads and acknowledges everything, concurrently
		for i := 0; i < n; i++ {
			p, err := fast.TryRead(iotdtest.Timeout)
			if err != nil {
				close(received)
				return
			}
			pub := p.(*packet.Publish)
			received <- string(pub.Payload)
			fast.Send(&packet.Puback{PacketID: pub.PacketID})
		}
	}()
	for i := 0; i < n; i++ {
		pub.Send(&packet.Publish{Topic: []byte("s/1"), Payload: []byte(fmt.Sprint(i)), QoS: 1, PacketID: uint16(i + 1)})
		// The publisher is never blocked: it is acknowledged at once.
		if a, ok := pub.Read().(*packet.Puback); !ok || a.PacketID != uint16(i+1) {
			t.Fatalf("PUBACK %d: got %T %+v", i+1, a, a)
		}
		if (i+1)%chunk == 0 { // pace the publisher to the healthy subscriber, so only the stuck one overflows
			for j := i + 1 - chunk; j <= i; j++ {
				if got, ok := <-received; !ok || got != fmt.Sprint(j) {
					t.Fatalf("fast subscriber got %q (open %v), want %d in order", got, ok, j)
				}
			}
		}
	}
	// The stuck one got its window (8) and has 100 queued; the rest was dropped, counted and logged.
	for i := 0; i < 8; i++ {
		if p := stuck.ReadPublish(); string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("stuck got %q", p.Payload)
		}
	}
	stuck.ExpectNoPublish()
	if st := env.Broker.Stats(); st.Dropped != n-8-100 {
		t.Fatalf("dropped %d, want %d", st.Dropped, n-8-100)
	}
	env.Logs.WaitFor(t, "level=WARN", "delivery dropped", "client_id=stuck")
}

// TestSlowSubscriberThrottlesPublisher: a subscriber that acknowledges, but more slowly than a
// publisher floods, loses nothing: the publisher is paused while the subscriber's queue is over
// half full, instead of the queue overflowing.
func TestSlowSubscriberThrottlesPublisher(t *testing.T) {
	env := iotdtest.Start(t, server.Options{}, broker.Options{MaxInflight: 8, MaxQueued: 100})
	sub := iotdtest.Dial(t, env.Addr)
	sub.MustConnect("slow", true)
	sub.Subscribe(1, 1, "f/#")
	pub := iotdtest.Dial(t, env.Addr)
	pub.MustConnect("flood", true)
	const n = 3000
	done := make(chan error, 1)
	go func() { // the publisher writes everything as fast as the socket takes it and reads its acks
		var b []byte
		for i := 0; i < n; i++ {
			b = (&packet.Publish{Topic: []byte("f/1"), Payload: []byte(fmt.Sprint(i)), QoS: 1, PacketID: uint16(i%60000 + 1)}).Append(b)
		}
		if _, err := pub.Conn.Write(b); err != nil {
			done <- err
			return
		}
		for i := 0; i < n; i++ {
			if _, err := pub.TryRead(iotdtest.Timeout); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for i := 0; i < n; i++ {
		p := sub.ReadPublish()
		if string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("got %q, want %d: lost or reordered", p.Payload, i)
		}
		if i%100 == 0 {
			time.Sleep(time.Millisecond) // a slower consumer than the publisher, not synchronisation
		}
		sub.Send(&packet.Puback{PacketID: p.PacketID})
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := env.Broker.Stats(); st.Dropped != 0 {
		t.Fatalf("dropped %d", st.Dropped)
	}
}
