package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/auth"
	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/limit"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
	"github.com/iotd/iotd/internal/tlsconf"
)

// recordAuth accepts everyone and records who connected.
type recordAuth struct {
	mu    sync.Mutex
	seen  []auth.Credentials
	fail  map[string]bool // usernames refused with ErrBadCredentials
	calls int
}

func (r *recordAuth) Authenticate(_ context.Context, c *auth.Credentials) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.seen = append(r.seen, *c)
	if r.fail[c.Username] {
		return auth.ErrBadCredentials
	}
	return nil
}

// startTLS runs a server with one TLS listener; it returns its address.
func startTLS(t *testing.T, opts tlsconf.Options, sopts server.Options, a auth.Authenticator, identity bool) string {
	t.Helper()
	tc, err := tlsconf.New(opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	b := broker.New(broker.Options{Authenticator: a})
	s, err := server.New(b, sopts)
	if err != nil {
		t.Fatal(err)
	}
	if identity {
		s.SetIdentity("tls", tc.Identity)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc.TLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln, "tls") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), iotdtest.Timeout)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, server.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

func dialTLS(t *testing.T, addr string, pki *iotdtest.PKI, cert, key string) (*iotdtest.Client, error) {
	t.Helper()
	cfg := &tls.Config{ServerName: "localhost", RootCAs: poolOf(t, pki.CAFile)}
	if cert != "" {
		c, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	d := &net.Dialer{Timeout: iotdtest.Timeout}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	if err := conn.Handshake(); err != nil {
		conn.Close()
		return nil, err
	}
	t.Cleanup(func() { conn.Close() })
	return iotdtest.Wrap(t, conn), nil
}

func TestTLSListener(t *testing.T) {
	pki := iotdtest.NewPKI(t, "")
	ra := &recordAuth{}
	addr := startTLS(t, tlsconf.Options{CertFile: pki.ServerCert, KeyFile: pki.ServerKey, CAFile: pki.CAFile, ClientAuth: "optional", IdentityFrom: "cn"},
		server.Options{}, ra, true)

	t.Run("publish and subscribe over TLS", func(t *testing.T) {
		sub, err := dialTLS(t, addr, pki, "", "")
		if err != nil {
			t.Fatal(err)
		}
		sub.MustConnect("tls-sub", true)
		sub.Subscribe(1, packet.QoS1, "tls/#")
		pub, err := dialTLS(t, addr, pki, "", "")
		if err != nil {
			t.Fatal(err)
		}
		pub.MustConnect("tls-pub", true)
		big := make([]byte, 100<<10) // several TLS records
		for i := range big {
			big[i] = byte(i)
		}
		pub.Send(&packet.Publish{Topic: []byte("tls/x"), Payload: big, QoS: packet.QoS1, PacketID: 3})
		expectPacket[*packet.Puback](t, pub)
		p := sub.ReadPublish()
		if string(p.Payload) != string(big) {
			t.Fatalf("payload of %d bytes came back as %d", len(big), len(p.Payload))
		}
	})
	t.Run("the client certificate names the user", func(t *testing.T) {
		c, err := dialTLS(t, addr, pki, pki.ClientCert, pki.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		c.Connect(&packet.Connect{ProtocolLevel: 4, ClientID: "certified", CleanSession: true, KeepAlive: 30, Username: "ignored", HasUsername: true})
		ra.mu.Lock()
		last := ra.seen[len(ra.seen)-1]
		ra.mu.Unlock()
		if last.Username != "client1" || !last.FromCertificate || last.Listener != "tls" {
			t.Fatalf("authenticator saw %+v; want username client1 from the certificate", last)
		}
	})
	t.Run("a client of another CA is refused in the handshake", func(t *testing.T) {
		cert, key := pki.Client(t, "mallory", iotdtest.OtherCA())
		c, err := dialTLS(t, addr, pki, cert, key)
		if err == nil {
			// TLS 1.3 reports the server's refusal of the client certificate on the first read.
			_, err = c.TryRead(iotdtest.Timeout)
		}
		if err == nil {
			t.Fatal("a certificate from an unknown CA was accepted")
		}
	})
}

func TestLoginBackoffAndRateLimit(t *testing.T) {
	ra := &recordAuth{fail: map[string]bool{"bad": true}}
	lim := limit.New(limit.Options{FailBase: 300 * time.Millisecond, FailMax: time.Second, PerIPRate: 1000, PerIPBurst: 1000})
	env := iotdtest.Start(t, server.Options{Limiter: lim}, broker.Options{Authenticator: ra})
	refused := func() time.Duration {
		c := iotdtest.Dial(t, env.Addr)
		start := time.Now()
		c.Send(&packet.Connect{ProtocolLevel: 4, ClientID: "guess", CleanSession: true, KeepAlive: 30, Username: "bad", HasUsername: true, Password: []byte("x"), HasPassword: true})
		c.Send(&packet.Pingreq{}) // ignored while the refusal waits
		ack := expectPacket[*packet.Connack](t, c)
		if ack.ReturnCode != packet.RefusedBadUsernameOrPassword {
			t.Fatalf("CONNACK %v", ack.ReturnCode)
		}
		c.ExpectClosed()
		return time.Since(start)
	}
	refused() // the first failure is answered at once
	if d := refused(); d < 250*time.Millisecond {
		// A lower bound on a delay the server imposes: safe on a slow machine.
		t.Fatalf("second failed login answered after %v; want the 300 ms backoff", d)
	}
	ok := iotdtest.Dial(t, env.Addr)
	ok.MustConnect("fine", true)

	t.Run("connection rate per source", func(t *testing.T) {
		lim := limit.New(limit.Options{PerIPRate: 0.001, PerIPBurst: 2})
		env := iotdtest.Start(t, server.Options{Limiter: lim}, broker.Options{})
		for range 2 {
			iotdtest.Dial(t, env.Addr).MustConnect("", true)
		}
		iotdtest.Dial(t, env.Addr).ExpectClosed()
		env.Logs.WaitFor(t, "connection rate limit")
		if n := env.Server.Stats().RateLimited; n != 1 {
			t.Fatalf("RateLimited = %d, want 1", n)
		}
	})
}

func poolOf(t *testing.T, caFile string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatal("no CA certificate in " + caFile)
	}
	return p
}

func TestTLSRefusals(t *testing.T) {
	pki := iotdtest.NewPKI(t, "")
	lim := limit.New(limit.Options{PerIPRate: 0.001, PerIPBurst: 2})
	addr := startTLS(t, tlsconf.Options{CertFile: pki.ServerCert, KeyFile: pki.ServerKey}, server.Options{Limiter: lim, ConnectTimeout: time.Second}, nil, false)
	t.Run("plain MQTT on a TLS port fails the handshake", func(t *testing.T) {
		c := iotdtest.Dial(t, addr)
		c.SendRaw([]byte{0x10, 12, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 30, 0, 0})
		if p, err := c.TryRead(iotdtest.Timeout); err == nil {
			t.Fatalf("got %T over a failed handshake", p)
		}
	})
	t.Run("the rate limit applies before the handshake", func(t *testing.T) {
		// The first connection above used one token; one more handshake succeeds, the next is refused.
		if _, err := dialTLS(t, addr, pki, "", ""); err != nil {
			t.Fatalf("second connection: %v", err)
		}
		if _, err := dialTLS(t, addr, pki, "", ""); err == nil {
			t.Fatal("a connection over the rate limit completed its handshake")
		}
	})
}
