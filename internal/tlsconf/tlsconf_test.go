package tlsconf_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/tlsconf"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testServer accepts TLS connections on 127.0.0.1, echoes what it reads, and reports each
// successful handshake's state.
type testServer struct {
	addr   string
	states chan tls.ConnectionState
}

// serve runs a testServer with cfg until the test ends; it closes every connection and waits for
// its goroutines on cleanup.
func serve(t *testing.T, cfg *tls.Config) *testServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{addr: ln.Addr().String(), states: make(chan tls.ConnectionState, 64)}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
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
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := tls.Server(c, cfg)
				tc.SetDeadline(time.Now().Add(iotdtest.Timeout))
				if err := tc.Handshake(); err != nil {
					return
				}
				tc.SetDeadline(time.Time{})
				s.states <- tc.ConnectionState()
				io.Copy(tc, tc)
			}()
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
	return s
}

// clientConfig trusts p's CA and presents the given key pair, if any, whenever asked.
func clientConfig(t *testing.T, p *iotdtest.PKI, certFile, keyFile string) *tls.Config {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(loadCert(t, p.CAFile))
	cfg := &tls.Config{RootCAs: roots, ServerName: "localhost"}
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		// Go's client would hold back a certificate whose issuer the server does not list;
		// OpenSSL clients such as mosquitto_pub send it anyway, and so does this one.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	return cfg
}

// dial connects and completes a round trip, which in TLS 1.3 is when a server's refusal of the
// client certificate reaches the client. The connection is closed when the test ends.
func dial(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: iotdtest.Timeout}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	if err := ping(c); err != nil {
		return nil, err
	}
	return c, nil
}

// ping writes a few bytes and reads the echo.
func ping(c *tls.Conn) error {
	c.SetDeadline(time.Now().Add(iotdtest.Timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "ping" {
		return errors.New("echo mismatch: " + string(buf))
	}
	return nil
}

func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newConfig(t *testing.T, opts tlsconf.Options, log *slog.Logger) *tlsconf.Config {
	t.Helper()
	c, err := tlsconf.New(opts, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func TestNewErrors(t *testing.T) {
	p := iotdtest.NewPKI(t, "")
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	garbage := write("garbage.pem", "not pem at all\n")
	badBlock := write("bad-block.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("junk")})))
	trusted := write("trusted.pem", string(pem.EncodeToMemory(&pem.Block{Type: "TRUSTED CERTIFICATE", Bytes: []byte("x")})))
	keyOnly := write("key-only.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")})))
	missing := filepath.Join(dir, "missing.pem")
	good := tlsconf.Options{CertFile: p.ServerCert, KeyFile: p.ServerKey}
	with := func(f func(o *tlsconf.Options)) tlsconf.Options { o := good; f(&o); return o }

	tests := []struct {
		name string
		opts tlsconf.Options
		want []string // substrings the error must contain
	}{
		{"no files", tlsconf.Options{}, []string{"certificate file is not set", "key file is not set"}},
		{"unknown client auth", with(func(o *tlsconf.Options) { o.ClientAuth = "maybe" }), []string{`client auth "maybe"`}},
		{"required without CA", with(func(o *tlsconf.Options) { o.ClientAuth = "required" }), []string{"needs a CA file"}},
		{"optional without CA", with(func(o *tlsconf.Options) { o.ClientAuth = "optional" }), []string{"needs a CA file"}},
		{"TLS 1.1 refused", with(func(o *tlsconf.Options) { o.MinVersion = "1.1" }), []string{`min version "1.1" is refused`}},
		{"TLS 1.0 refused", with(func(o *tlsconf.Options) { o.MinVersion = "1.0" }), []string{"refused"}},
		{"unknown version", with(func(o *tlsconf.Options) { o.MinVersion = "2" }), []string{`min version "2"`}},
		{"unknown identity", with(func(o *tlsconf.Options) { o.IdentityFrom = "serial" }), []string{`identity from "serial"`}},
		{"cert missing", with(func(o *tlsconf.Options) { o.CertFile = missing }), []string{"certificate file", missing}},
		{"key missing", with(func(o *tlsconf.Options) { o.KeyFile = missing }), []string{"key file", missing}},
		{"cert not PEM", with(func(o *tlsconf.Options) { o.CertFile = garbage }), []string{"certificate file", garbage, "no PEM CERTIFICATE"}},
		{"cert file holds a key", with(func(o *tlsconf.Options) { o.CertFile = keyOnly }), []string{keyOnly, "no PEM CERTIFICATE"}},
		{"key not PEM", with(func(o *tlsconf.Options) { o.KeyFile = garbage }), []string{"key file", garbage, "no PEM PRIVATE KEY"}},
		{"key of another cert", with(func(o *tlsconf.Options) { o.KeyFile = p.ClientKey }), []string{p.ServerCert, p.ClientKey}},
		{"CA missing", with(func(o *tlsconf.Options) { o.CAFile = missing; o.ClientAuth = "required" }), []string{"CA file", missing}},
		{"CA not PEM", with(func(o *tlsconf.Options) { o.CAFile = garbage; o.ClientAuth = "required" }), []string{"CA file", garbage}},
		{"CA block broken", with(func(o *tlsconf.Options) { o.CAFile = badBlock; o.ClientAuth = "required" }), []string{badBlock, "block 1"}},
		{"CA only trusted-certificate blocks", with(func(o *tlsconf.Options) { o.CAFile = trusted; o.ClientAuth = "required" }), []string{trusted, "no CERTIFICATE block"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tlsconf.New(tt.opts, nil)
			if err == nil {
				t.Fatalf("New: got %v, want an error", c)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestHandshake(t *testing.T) {
	p := iotdtest.NewPKI(t, "")
	expired, expiredKey := p.Client(t, "old", iotdtest.Expired())
	stranger, strangerKey := p.Client(t, "stranger", iotdtest.OtherCA())
	serverOnly, serverOnlyKey := p.Client(t, "srvonly", iotdtest.ExtKeyUsage(x509.ExtKeyUsageServerAuth))

	type pair struct{ cert, key string }
	good := pair{p.ClientCert, p.ClientKey}
	tests := []struct {
		name       string
		clientAuth string
		minVersion string
		client     pair
		minTLS     uint16 // client's version range; zero means Go's defaults
		maxTLS     uint16
		wantOK     bool
		wantID     string // identity the server sees; "" for none
	}{
		{"no client auth", "", "", pair{}, 0, 0, true, ""},
		{"no client auth ignores a client cert", "none", "", good, 0, 0, true, ""},
		{"required, good cert", "required", "", good, 0, 0, true, "client1"},
		{"required, good cert over TLS 1.2", "required", "", good, 0, tls.VersionTLS12, true, "client1"},
		{"required, no cert refused", "required", "", pair{}, 0, 0, false, ""},
		{"required, no cert refused over TLS 1.2", "required", "", pair{}, 0, tls.VersionTLS12, false, ""},
		{"required, wrong CA refused", "required", "", pair{stranger, strangerKey}, 0, 0, false, ""},
		{"required, expired cert refused", "required", "", pair{expired, expiredKey}, 0, 0, false, ""},
		{"required, server-only cert refused", "required", "", pair{serverOnly, serverOnlyKey}, 0, 0, false, ""},
		{"optional, no cert accepted", "optional", "", pair{}, 0, 0, true, ""},
		{"optional, good cert", "optional", "", good, 0, 0, true, "client1"},
		{"optional, wrong CA refused", "optional", "", pair{stranger, strangerKey}, 0, 0, false, ""},
		{"optional, expired cert refused", "optional", "", pair{expired, expiredKey}, 0, 0, false, ""},
		{"TLS 1.1 client refused", "", "", pair{}, tls.VersionTLS10, tls.VersionTLS11, false, ""},
		{"TLS 1.0 client refused", "", "", pair{}, tls.VersionTLS10, tls.VersionTLS10, false, ""},
		{"TLS 1.2 client accepted", "", "1.2", pair{}, 0, tls.VersionTLS12, true, ""},
		{"min 1.3 refuses TLS 1.2 client", "", "1.3", pair{}, 0, tls.VersionTLS12, false, ""},
		{"min 1.3 accepts TLS 1.3 client", "", "1.3", pair{}, tls.VersionTLS13, 0, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := tlsconf.Options{CertFile: p.ServerCert, KeyFile: p.ServerKey, ClientAuth: tt.clientAuth, MinVersion: tt.minVersion}
			if tt.clientAuth != "" && tt.clientAuth != "none" {
				opts.CAFile = p.CAFile
			}
			c := newConfig(t, opts, nil)
			srv := serve(t, c.TLSConfig())
			cfg := clientConfig(t, p, tt.client.cert, tt.client.key)
			cfg.MinVersion, cfg.MaxVersion = tt.minTLS, tt.maxTLS
			_, err := dial(t, srv.addr, cfg)
			if (err == nil) != tt.wantOK {
				t.Fatalf("dial: got %v, want ok=%v", err, tt.wantOK)
			}
			if !tt.wantOK {
				return
			}
			st := <-srv.states
			if tt.minVersion == "1.3" && st.Version != tls.VersionTLS13 {
				t.Errorf("version: got %x, want TLS 1.3", st.Version)
			}
			id, ok := c.Identity(st)
			if id != tt.wantID || ok != (tt.wantID != "") {
				t.Errorf("identity: got %q, %v; want %q", id, ok, tt.wantID)
			}
		})
	}
}

func TestIdentity(t *testing.T) {
	u, _ := url.Parse("spiffe://example.org/device/7")
	full := &x509.Certificate{
		DNSNames:       []string{"dev7.example.org", "other.example.org"},
		EmailAddresses: []string{"dev7@example.org"},
		URIs:           []*url.URL{u},
	}
	full.Subject.CommonName = "dev7"
	bare := &x509.Certificate{}
	state := func(c *x509.Certificate) tls.ConnectionState {
		return tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}
	}
	tests := []struct {
		name  string
		state tls.ConnectionState
		from  string
		want  string
		ok    bool
	}{
		{"cn", state(full), "cn", "dev7", true},
		{"default is cn", state(full), "", "dev7", true},
		{"first DNS SAN", state(full), "san-dns", "dev7.example.org", true},
		{"e-mail SAN", state(full), "san-email", "dev7@example.org", true},
		{"URI SAN", state(full), "san-uri", "spiffe://example.org/device/7", true},
		{"empty cn", state(bare), "cn", "", false},
		{"no DNS SAN", state(bare), "san-dns", "", false},
		{"no e-mail SAN", state(bare), "san-email", "", false},
		{"no URI SAN", state(bare), "san-uri", "", false},
		{"unknown source", state(full), "serial", "", false},
		{"no verified chain", tls.ConnectionState{}, "cn", "", false},
		{"unverified peer cert", tls.ConnectionState{PeerCertificates: []*x509.Certificate{full}}, "cn", "", false},
		{"empty chain", tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{}}}, "cn", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tlsconf.Identity(tt.state, tt.from)
			if got != tt.want || ok != tt.ok {
				t.Errorf("got %q, %v; want %q, %v", got, ok, tt.want, tt.ok)
			}
		})
	}

	// The same over real handshakes, with certificates made by the test PKI.
	p := iotdtest.NewPKI(t, "")
	cert, key := p.Client(t, "dev8", iotdtest.DNSNames("dev8.example.org"), iotdtest.Emails("dev8@example.org"),
		iotdtest.URIs("urn:iotd:dev8"))
	for _, tt := range []struct{ from, want string }{
		{"cn", "dev8"}, {"san-dns", "dev8.example.org"}, {"san-email", "dev8@example.org"}, {"san-uri", "urn:iotd:dev8"},
	} {
		t.Run("handshake "+tt.from, func(t *testing.T) {
			c := newConfig(t, tlsconf.Options{CertFile: p.ServerCert, KeyFile: p.ServerKey, CAFile: p.CAFile,
				ClientAuth: "required", IdentityFrom: tt.from}, nil)
			srv := serve(t, c.TLSConfig())
			if _, err := dial(t, srv.addr, clientConfig(t, p, cert, key)); err != nil {
				t.Fatal(err)
			}
			if got, ok := c.Identity(<-srv.states); got != tt.want || !ok {
				t.Errorf("got %q, %v; want %q", got, ok, tt.want)
			}
		})
	}
}

// copyFile overwrites dst with the content of src in place.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// servedSerial dials and returns the serial number of the certificate the server presents.
func servedSerial(t *testing.T, addr string, cfg *tls.Config) string {
	t.Helper()
	c, err := dial(t, addr, cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

func TestReload(t *testing.T) {
	p := iotdtest.NewPKI(t, "")
	logs := &iotdtest.Logs{}
	c := newConfig(t, tlsconf.Options{CertFile: p.ServerCert, KeyFile: p.ServerKey}, slog.New(slog.NewTextHandler(logs, nil)))
	srv := serve(t, c.TLSConfig())
	cfg := clientConfig(t, p, "", "")
	oldSerial := loadCert(t, p.ServerCert).SerialNumber.String()

	existing, err := dial(t, srv.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := existing.ConnectionState().PeerCertificates[0].SerialNumber.String(); got != oldSerial {
		t.Fatalf("served serial %s, want %s", got, oldSerial)
	}

	t.Run("unchanged files", func(t *testing.T) {
		if err := c.Reload(); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(logs.String(), "reloaded") {
			t.Errorf("an unchanged reload was logged:\n%s", logs)
		}
	})

	newCert, newKey := p.Server(t, "server2")
	newSerial := loadCert(t, newCert).SerialNumber.String()
	t.Run("new server certificate", func(t *testing.T) {
		copyFile(t, newCert, p.ServerCert)
		copyFile(t, newKey, p.ServerKey)
		if err := c.Reload(); err != nil {
			t.Fatal(err)
		}
		logs.WaitFor(t, "tls certificate reloaded", "CN=server2")
		if err := ping(existing); err != nil {
			t.Errorf("existing connection after reload: %v", err)
		}
		if got := servedSerial(t, srv.addr, cfg); got != newSerial {
			t.Errorf("new handshake got serial %s, want the new %s", got, newSerial)
		}
		if got := c.Certificate().SerialNumber.String(); got != newSerial {
			t.Errorf("Certificate: got serial %s, want %s", got, newSerial)
		}
	})

	t.Run("broken certificate keeps the old one", func(t *testing.T) {
		if err := os.WriteFile(p.ServerCert, []byte("-----BEGIN CERT"), 0o600); err != nil {
			t.Fatal(err)
		}
		err := c.Reload()
		if err == nil || !strings.Contains(err.Error(), p.ServerCert) {
			t.Fatalf("Reload: got %v, want an error naming %s", err, p.ServerCert)
		}
		if got := servedSerial(t, srv.addr, cfg); got != newSerial {
			t.Errorf("after a failed reload got serial %s, want still %s", got, newSerial)
		}
		if err := ping(existing); err != nil {
			t.Errorf("existing connection: %v", err)
		}
	})

	t.Run("mismatched key keeps the old one", func(t *testing.T) {
		copyFile(t, newCert, p.ServerCert)
		copyFile(t, p.ClientKey, p.ServerKey)
		if err := c.Reload(); err == nil {
			t.Fatal("Reload with a key of another certificate succeeded")
		}
		if got := servedSerial(t, srv.addr, cfg); got != newSerial {
			t.Errorf("got serial %s, want still %s", got, newSerial)
		}
	})
}

func TestReloadCA(t *testing.T) {
	p := iotdtest.NewPKI(t, "")
	q := iotdtest.NewPKI(t, "") // a second CA that replaces the first
	logs := &iotdtest.Logs{}
	c := newConfig(t, tlsconf.Options{CertFile: p.ServerCert, KeyFile: p.ServerKey, CAFile: p.CAFile, ClientAuth: "required"},
		slog.New(slog.NewTextHandler(logs, nil)))
	srv := serve(t, c.TLSConfig())
	fromP := clientConfig(t, p, p.ClientCert, p.ClientKey)
	fromQ := clientConfig(t, p, q.ClientCert, q.ClientKey) // trusts p's server CA, presents q's client cert

	existing, err := dial(t, srv.addr, fromP)
	if err != nil {
		t.Fatalf("client of the first CA: %v", err)
	}
	if _, err := dial(t, srv.addr, fromQ); err == nil {
		t.Fatal("client of the second CA accepted before the reload")
	}
	copyFile(t, q.CAFile, p.CAFile)
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, srv.addr, fromQ); err != nil {
		t.Errorf("client of the second CA after the reload: %v", err)
	}
	if _, err := dial(t, srv.addr, fromP); err == nil {
		t.Error("client of the removed CA accepted after the reload")
	}
	if err := ping(existing); err != nil {
		t.Errorf("existing connection of the removed CA: %v", err)
	}
}

func TestLogsInvalidCertificate(t *testing.T) {
	p := iotdtest.NewPKI(t, "")
	cert, key := p.Server(t, "stale", iotdtest.Expired())
	logs := &iotdtest.Logs{}
	newConfig(t, tlsconf.Options{CertFile: cert, KeyFile: key, CAFile: p.CAFile}, slog.New(slog.NewTextHandler(logs, nil)))
	logs.WaitFor(t, "outside its validity period", "CN=stale")
	logs.WaitFor(t, "CA file is ignored")
}

func TestTLSConfigGetCertificate(t *testing.T) {
	p := iotdtest.NewPKI(t, "")
	c := newConfig(t, tlsconf.Options{CertFile: p.ServerCert, KeyFile: p.ServerKey}, nil)
	got, err := c.TLSConfig().GetCertificate(&tls.ClientHelloInfo{})
	if err != nil || got == nil || got.Leaf.SerialNumber.Cmp(loadCert(t, p.ServerCert).SerialNumber) != 0 {
		t.Errorf("GetCertificate: got %v, %v; want the server certificate", got, err)
	}
}
