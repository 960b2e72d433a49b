package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/iotd/iotd/internal/auth"
	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/config"
	"github.com/iotd/iotd/internal/limit"
	"github.com/iotd/iotd/internal/tlsconf"
)

// errRevoked is the close reason of a client whose access a reload took away.
var errRevoked = errors.New("access revoked by a reload of users or rules")

// security is what cmd/iotd builds from [auth], the listeners' TLS keys and [limits]: the
// authenticator and authorizer handed to the broker, the TLS configurations of the listeners, and
// the connection limiter handed to the server.
type security struct {
	cfg     config.Config
	file    *auth.File                 // nil without password and ACL files
	tls     map[string]*tlsconf.Config // by listener name
	limiter *limit.Limiter             // nil without limits
	log     *slog.Logger
}

// newSecurity loads the password and ACL files and the listeners' certificates. Errors name the
// file at fault.
func newSecurity(cfg config.Config, log *slog.Logger) (*security, error) {
	s := &security{cfg: cfg, tls: make(map[string]*tlsconf.Config), log: log}
	if cfg.Auth.PasswordFile != "" || cfg.Auth.ACLFile != "" {
		ttl := cfg.Auth.CacheTTL.Std()
		if ttl == 0 {
			ttl = -1 // the file's "0s" turns the caches off; auth's 0 would mean its default
		}
		f, err := auth.NewFile(auth.FileOptions{
			PasswordFile: cfg.Auth.PasswordFile,
			ACLFile:      cfg.Auth.ACLFile,
			// Per-listener anonymous access is decided by authenticate below; File is asked only
			// about clients that present a username.
			AllowAnonymous: true,
			CacheTTL:       ttl,
			Logger:         log,
		})
		if err != nil {
			return nil, err
		}
		s.file = f
	}
	for _, l := range cfg.Listeners {
		if l.Type != "tls" {
			continue
		}
		tc, err := tlsconf.New(tlsconf.Options{CertFile: l.CertFile, KeyFile: l.KeyFile, CAFile: l.CAFile,
			ClientAuth: l.ClientAuth, MinVersion: l.MinTLSVersion, IdentityFrom: l.IdentityFrom}, log)
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", l.Name, err)
		}
		s.tls[l.Name] = tc
	}
	lm := cfg.Limits
	if lm.ConnectionRate > 0 || lm.TotalConnectionRate > 0 || lm.AuthFailDelay > 0 {
		s.limiter = limit.New(limit.Options{
			PerIPRate: lm.ConnectionRate, PerIPBurst: lm.ConnectionBurst,
			TotalRate: lm.TotalConnectionRate, TotalBurst: lm.TotalConnectionBurst,
			FailBase: lm.AuthFailDelay.Std(), FailMax: lm.AuthFailMaxDelay.Std(),
		})
	}
	return s, nil
}

// needsAuth reports whether any client can be refused at CONNECT: otherwise the broker runs
// without an authenticator, which costs nothing.
func (s *security) needsAuth() bool {
	if s.file != nil && s.cfg.Auth.PasswordFile != "" {
		return true
	}
	for _, l := range s.cfg.Listeners {
		if !s.cfg.AnonymousAllowed(l) || l.IdentityFrom != "" {
			return true
		}
	}
	return false
}

// anonymous reports whether clients without a username may connect on the listener named name.
func (s *security) anonymous(name string) bool {
	for _, l := range s.cfg.Listeners {
		if l.Name == name {
			return s.cfg.AnonymousAllowed(l)
		}
	}
	return false
}

// Authenticate implements auth.Authenticator: anonymous access per listener, a certificate
// identity verified by the listener as the credential, and the password file for the rest.
func (s *security) Authenticate(ctx context.Context, c *auth.Credentials) error {
	switch {
	case c.FromCertificate:
		return nil // the TLS handshake verified the certificate against the listener's CA
	case !c.HasUsername:
		if s.anonymous(c.Listener) {
			return nil
		}
		return auth.ErrNotAuthorized
	case s.file == nil || s.cfg.Auth.PasswordFile == "":
		// Usernames are not checked without a password file (as in Mosquitto); the ACLs still
		// see them.
		if s.anonymous(c.Listener) {
			return nil
		}
		return auth.ErrNotAuthorized
	}
	return s.file.Authenticate(ctx, c)
}

// stillValid is asked after a reload about every connected client.
// It answers as Authenticate would, except that the password is not kept after CONNECT: a client
// whose user still exists stays, whatever its password now is.
func (s *security) stillValid(c *broker.Connected) bool {
	if c.FromCertificate {
		return true // a certificate identity, verified at its handshake
	}
	if c.Username == "" || s.file == nil || s.cfg.Auth.PasswordFile == "" {
		return s.anonymous(c.Listener)
	}
	return s.file.UserExists(c.Username)
}

// authenticator and authorizer return what the broker gets (nil: allow everything).
func (s *security) authenticator() auth.Authenticator {
	if s.needsAuth() {
		return s
	}
	return nil
}

func (s *security) authorizer() auth.Authorizer {
	if s.file != nil && s.cfg.Auth.ACLFile != "" {
		return s.file
	}
	return nil
}

// listen opens the listener l describes: plain TCP, or TLS over TCP.
func (s *security) listen(l config.Listener) (net.Listener, error) {
	ln, err := net.Listen("tcp", l.Address)
	if err != nil {
		return nil, err
	}
	if tc := s.tls[l.Name]; tc != nil {
		return tls.NewListener(ln, tc.TLSConfig()), nil
	}
	return ln, nil
}

// watch reloads certificates when their files change and lets the connection limiter forget idle
// sources, until ctx ends. The caller owns the goroutines through the returned wait function.
func (s *security) watch(ctx context.Context) (wait func()) {
	n := len(s.tls)
	done := make(chan struct{}, n+1)
	if s.limiter != nil {
		n++
		go func() {
			t := time.NewTicker(time.Minute)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					done <- struct{}{}
					return
				case now := <-t.C:
					s.limiter.Prune(now)
				}
			}
		}()
	}
	for name, tc := range s.tls {
		go func() {
			if err := tc.Watch(ctx); err != nil {
				s.log.Warn("certificate files are not watched; SIGHUP still reloads them", "listener", name, "error", err)
			}
			done <- struct{}{}
		}()
	}
	return func() {
		for range n {
			<-done
		}
	}
}

// reload re-reads the password and ACL files and the certificates (SIGHUP) and, if so configured,
// disconnects clients that lost access. A file that does not load keeps the old one in force.
func (s *security) reload(b *broker.Broker) {
	ok, usersOK := true, true
	if s.file != nil {
		if err := s.file.Reload(); err != nil {
			ok, usersOK = false, false
			s.log.Error("reload: users and ACLs kept as they were", "error", err)
		}
	}
	for name, tc := range s.tls {
		if err := tc.Reload(); err != nil {
			ok = false
			s.log.Error("reload: certificate kept as it was", "listener", name, "error", err)
		}
	}
	closed := 0
	if usersOK && s.cfg.Auth.DisconnectOnRevoke {
		// The users in force are the new ones, whatever became of the certificates.
		closed = b.Revalidate(s.stillValid, errRevoked)
	}
	s.log.Info("reloaded users, ACLs and certificates", "ok", ok, "disconnected", closed)
}
