package server_test

import (
	"testing"
	"time"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

func start(t *testing.T) *iotdtest.Env {
	return iotdtest.Start(t, server.Options{}, broker.Options{})
}

// connectBytes is a hand-made CONNECT: protocol name, level, flags, keep-alive 60, client id "c".
func connectBytes(name string, level, flags byte) []byte {
	body := []byte{0, byte(len(name))}
	body = append(body, name...)
	body = append(body, level, flags, 0, 60, 0, 1, 'c')
	return append([]byte{0x10, byte(len(body))}, body...)
}

func TestConnect(t *testing.T) {
	env := start(t)
	t.Run("MQTT-3.2.2-1 MQTT-3.2.0-1 accepted clean session has session present 0", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		ack := c.MustConnect("a", true)
		if ack.SessionPresent {
			t.Fatal("session present set for a clean session")
		}
		env.Logs.WaitFor(t, "client connected", "client_id=a", "session=__client_a")
	})
	t.Run("MQTT-3.1.0-1 first packet not CONNECT closes", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.Send(&packet.Pingreq{})
		c.ExpectClosed()
		env.Logs.WaitFor(t, "level=WARN", "first packet is PINGREQ", "conn=__anon_")
	})
	t.Run("MQTT-3.1.0-2 second CONNECT closes", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("second", true)
		c.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "second", CleanSession: true})
		c.ExpectClosed()
		env.Logs.WaitFor(t, "second CONNECT")
	})
	t.Run("MQTT-3.1.2-1 wrong protocol name closes without CONNACK", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.SendRaw(connectBytes("MQTX", 4, 0x02))
		c.ExpectClosed()
		env.Logs.WaitFor(t, "level=WARN", "MQTX")
	})
	for _, level := range []byte{5, 6, 2} {
		t.Run("MQTT-3.1.2-2 unsupported level gets CONNACK 1", func(t *testing.T) {
			c := iotdtest.Dial(t, env.Addr)
			c.SendRaw(connectBytes("MQTT", level, 0x02))
			ack, ok := c.Read().(*packet.Connack)
			if !ok || ack.ReturnCode != packet.RefusedProtocolVersion {
				t.Fatalf("got %+v, want CONNACK 1", ack)
			}
			c.ExpectClosed()
		})
	}
	t.Run("MQTT 3.1 (MQIsdp level 3) is accepted", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.SendRaw(connectBytes("MQIsdp", 3, 0x02))
		ack, ok := c.Read().(*packet.Connack)
		if !ok || ack.ReturnCode != packet.Accepted {
			t.Fatalf("got %+v, want accepted", ack)
		}
	})
	t.Run("MQTT-3.1.2-3 reserved flag set closes", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.SendRaw(connectBytes("MQTT", 4, 0x03))
		c.ExpectClosed()
	})
	t.Run("MQTT-3.1.3-8 MQTT-3.2.2-4 MQTT-3.2.2-5 empty client id without clean session gets CONNACK 2", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		ack := c.Connect(&packet.Connect{CleanSession: false})
		if ack.ReturnCode != packet.RefusedIdentifierRejected || ack.SessionPresent {
			t.Fatalf("got %+v, want CONNACK 2 with session present 0", ack)
		}
		c.ExpectClosed()
		env.Logs.WaitFor(t, "connection refused in CONNACK")
	})
	t.Run("MQTT-3.1.3-6 MQTT-3.1.3-7 empty client id with clean session is assigned one", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		ack := c.Connect(&packet.Connect{CleanSession: true})
		if ack.ReturnCode != packet.Accepted {
			t.Fatalf("got %v", ack.ReturnCode)
		}
		env.Logs.WaitFor(t, "client connected", "client_id=iotd-")
	})
	t.Run("MQTT-3.1.3-5 long client ids with any characters are allowed", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("a-very-long-client-identifier/with:punctuation-and-ünïcode-0123456789", true)
	})
	t.Run("will topic with a wildcard closes", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.Send(&packet.Connect{ClientID: "w", CleanSession: true, ProtocolName: "MQTT", ProtocolLevel: 4,
			Will: &packet.Will{Topic: "a/#", Payload: []byte("x")}})
		c.ExpectClosed()
	})
}

func TestMaxKeepAlive(t *testing.T) {
	env := iotdtest.Start(t, server.Options{MaxKeepAlive: 30}, broker.Options{})
	for _, ka := range []uint16{0, 31, 60} {
		c := iotdtest.Dial(t, env.Addr)
		ack := c.Connect(&packet.Connect{ClientID: "k", CleanSession: true, KeepAlive: ka})
		if ack.ReturnCode != packet.RefusedIdentifierRejected {
			t.Fatalf("keep-alive %d: got %v, want CONNACK 2", ka, ack.ReturnCode)
		}
		c.ExpectClosed()
	}
	c := iotdtest.Dial(t, env.Addr)
	if ack := c.Connect(&packet.Connect{ClientID: "k", CleanSession: true, KeepAlive: 30}); ack.ReturnCode != packet.Accepted {
		t.Fatalf("keep-alive 30: got %v", ack.ReturnCode)
	}
}

func TestConnectTimeout(t *testing.T) {
	env := iotdtest.Start(t, server.Options{ConnectTimeout: 300 * time.Millisecond, Tick: 20 * time.Millisecond}, broker.Options{})
	t.Run("client that connects and sends nothing is closed", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.ExpectClosed()
		env.Logs.WaitFor(t, "level=INFO", "no CONNECT within the connect timeout", "conn=__anon_")
	})
	t.Run("client that sends half a CONNECT and stops is closed", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		b := connectBytes("MQTT", 4, 0x02)
		c.SendRaw(b[:len(b)/2])
		c.ExpectClosed()
	})
	t.Run("trickling bytes does not extend the connect timeout", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		b := connectBytes("MQTT", 4, 0x02)
		deadline := time.Now().Add(iotdtest.Timeout)
		closed := false
		for i := 0; i < len(b)-1 && time.Now().Before(deadline); i++ {
			if _, err := c.Conn.Write(b[i : i+1]); err != nil {
				closed = true
				break
			}
			time.Sleep(100 * time.Millisecond) // the pace of a slow-loris client, not synchronisation
		}
		if !closed {
			c.ExpectClosed()
		}
	})
	t.Run("connected client is not affected by the connect timeout", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.MustConnect("ok", true)
		env.Logs.WaitFor(t, "no CONNECT within the connect timeout") // others timed out meanwhile
		c.Ping()
	})
}

func TestKeepAlive(t *testing.T) {
	env := iotdtest.Start(t, server.Options{Tick: 20 * time.Millisecond}, broker.Options{})
	t.Run("MQTT-3.1.2-24 no packet within 1.5 x keep-alive closes", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.Connect(&packet.Connect{ClientID: "ka", CleanSession: true, KeepAlive: 1})
		start := time.Now()
		c.ExpectClosed()
		if el := time.Since(start); el < time.Second {
			t.Fatalf("closed after %v, before 1.5 s", el)
		}
		env.Logs.WaitFor(t, "level=INFO", "keep-alive timeout", "client_id=ka")
	})
	t.Run("MQTT-3.12.4-1 PINGREQ answered and keeps the connection", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.Connect(&packet.Connect{ClientID: "ping", CleanSession: true, KeepAlive: 1})
		for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); {
			c.Ping()
			time.Sleep(300 * time.Millisecond) // client pacing within its keep-alive
		}
	})
	t.Run("keep-alive 0 never times out", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.Connect(&packet.Connect{ClientID: "zero", CleanSession: true, KeepAlive: 0})
		k := iotdtest.Dial(t, env.Addr)
		k.Connect(&packet.Connect{ClientID: "ka2", CleanSession: true, KeepAlive: 1})
		k.ExpectClosed() // 1.5 s passed
		c.Ping()
	})
	t.Run("half a packet after CONNECT then silence closes at keep-alive", func(t *testing.T) {
		c := iotdtest.Dial(t, env.Addr)
		c.Connect(&packet.Connect{ClientID: "half", CleanSession: true, KeepAlive: 1})
		c.SendRaw([]byte{0x30, 10, 0, 3, 'a'})
		c.ExpectClosed()
	})
}
