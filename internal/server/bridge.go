package server

import (
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Transports without a descriptor of their own (TLS now, WebSocket later) are bridged into the
// event loops: after the TLS handshake the server makes a Unix socket pair, parks one end in an
// event loop exactly like an accepted TCP socket, and runs two goroutines that copy between the
// other end and the transport (decrypting one way, encrypting the other). All MQTT handling, the
// durability gates, keep-alive and limits stay in one code path. The price is paid only by such
// connections: two goroutines, two copy buffers and the transport's own buffers each (tens of
// KiB instead of a few hundred bytes for an idle plain-TCP connection), and one extra copy per
// direction.

// IdentityFunc returns the identity of a TLS client from its verified certificate (for example
// its CN), and whether there is one. The broker uses it in place of the CONNECT username.
type IdentityFunc func(state tls.ConnectionState) (string, bool)

// SetIdentity makes connections on the listener named name take their username from their TLS
// client certificate. Call it before Serve.
func (s *Server) SetIdentity(name string, fn IdentityFunc) {
	s.mu.Lock()
	if s.identities == nil {
		s.identities = make(map[string]IdentityFunc)
	}
	s.identities[name] = fn
	s.mu.Unlock()
}

func (s *Server) identityFunc(name string) IdentityFunc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.identities[name]
}

// bridgeBuf is the size of each copy buffer: one TLS record.
const bridgeBuf = 16 << 10

var bridgePool = sync.Pool{New: func() any { b := make([]byte, bridgeBuf); return &b }}

// bridge serves nc, a connection without a descriptor, through a socket pair.
func (s *Server) bridge(nc net.Conn, remote netip.AddrPort, listener string) {
	if !s.allow(remote, listener) {
		nc.Close()
		return
	}
	s.bridges.Add(1)
	go func() {
		defer s.bridges.Done()
		var ident *string
		if tc, ok := nc.(*tls.Conn); ok {
			// The handshake is bounded like a CONNECT: a peer that never finishes it is dropped.
			_ = tc.SetDeadline(time.Now().Add(s.opts.ConnectTimeout)) // fails only on a closed conn; the handshake reports that
			if err := tc.HandshakeContext(s.baseCtx); err != nil {
				nc.Close()
				s.log.Info("TLS handshake failed", "listener", listener, "remote", remote.String(), "error", err)
				return
			}
			_ = tc.SetDeadline(time.Time{})
			if fn := s.identityFunc(listener); fn != nil {
				if id, ok := fn(tc.ConnectionState()); ok {
					ident = &id
				}
			}
		}
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			nc.Close()
			s.warnRateLimited("connection refused: socketpair failed", "listener", listener, "error", err)
			return
		}
		f := os.NewFile(uintptr(fds[1]), "bridge")
		pc, err := net.FileConn(f) // dups the descriptor into the runtime poller
		f.Close()
		if err != nil {
			unix.Close(fds[0])
			nc.Close()
			s.warnRateLimited("connection refused: bridge failed", "listener", listener, "error", err)
			return
		}
		if !s.acceptFD(fds[0], remote, listener, ident, true) {
			pc.Close()
			nc.Close()
			return
		}
		if s.isClosing() {
			// Shutdown may have closed every connection before this one was registered.
			if c := s.conns[fds[0]].Load(); c != nil {
				c.close(errShutdown)
			}
		}
		done := make(chan struct{})
		go func() {
			// Transport to broker; at its end, tell the broker side the client is gone.
			copyBridge(pc, nc)
			if uc, ok := pc.(*net.UnixConn); ok {
				_ = uc.CloseWrite() // best effort: closing pc below ends the broker side anyway
			}
			close(done)
		}()
		// Broker to transport; it ends when the broker closes its end or the transport fails.
		copyBridge(nc, pc)
		nc.Close() // a TLS close_notify, then the socket: unblocks the other copy
		<-done
		pc.Close()
	}()
}

// copyBridge copies src to dst until either fails, with a pooled buffer.
func copyBridge(dst io.Writer, src io.Reader) {
	bp := bridgePool.Get().(*[]byte)
	_, _ = io.CopyBuffer(dst, src, *bp) // the end of a connection is reported by the broker side
	bridgePool.Put(bp)
}
