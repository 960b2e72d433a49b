package server_test

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"testing"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/server"
)

// wrapped hides the listener's SyscallConn, as a listener wrapper from another library would: the
// server then accepts through net.Listener.Accept and parks a dup of each connection's fd.
type wrapped struct{ net.Listener }

func TestListenerKinds(t *testing.T) {
	b := broker.New(broker.Options{})
	s, err := server.New(b, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var served []chan error
	serve := func(l net.Listener, name string) string {
		ch := make(chan error, 1)
		served = append(served, ch)
		go func() { ch <- s.Serve(l, name) }()
		return l.Addr().String()
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wrappedAddr := serve(wrapped{tcp}, "wrapped")
	sock := filepath.Join(t.TempDir(), "iotd.sock")
	unixLn, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	serve(unixLn, "unix")
	addrs := []struct{ network, addr string }{{"tcp", wrappedAddr}, {"unix", sock}}
	if v6, err := net.Listen("tcp", "[::1]:0"); err == nil {
		addrs = append(addrs, struct{ network, addr string }{"tcp", serve(v6, "v6")})
	}
	for i, a := range addrs {
		nc, err := net.Dial(a.network, a.addr)
		if err != nil {
			t.Fatalf("dial %s %s: %v", a.network, a.addr, err)
		}
		c := iotdtest.Wrap(t, nc)
		c.MustConnect(string(rune('a'+i)), true)
		c.Subscribe(1, 0, "k")
		c.Send(&packet.Publish{Topic: []byte("k"), Payload: []byte(a.network)})
		if p := c.ReadPublish(); string(p.Payload) != a.network {
			t.Fatalf("%s: got %q", a.addr, p.Payload)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), iotdtest.Timeout)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ch := range served {
		if err := <-ch; !errors.Is(err, server.ErrServerClosed) {
			t.Fatalf("Serve: %v", err)
		}
	}
}
