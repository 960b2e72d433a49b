package integration

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
)

// Helpers of security_test.go: an iotd process started from a configuration file with several
// listeners, reloads by SIGHUP, raw clients that log in, and TLS dials that must fail.

// secListeningRE reads a listener's name and address from its "listening" log line.
var secListeningRE = regexp.MustCompile(`msg=listening listener=(\S+) .*address=(\S+)`)

// secReloadedMsg is the log line that ends every SIGHUP reload, successful or not.
const secReloadedMsg = `msg="reloaded users, ACLs and certificates"`

// secBroker is an iotd process started with -c from a configuration file.
type secBroker struct {
	p     *proc
	addrs map[string]string // listener name -> address
	pos   int               // next stderr line that reload looks at
}

// startSecBroker writes config into dir (a new temporary directory when empty) and starts iotd
// with it. It returns once iotd has logged every listener and "iotd started".
func startSecBroker(t *testing.T, dir, config string) *secBroker {
	t.Helper()
	needIotd(t)
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, "iotd.toml")
	writeFile(t, path, config)
	b := &secBroker{p: startProc(t, iotdBin, withDataDir(t, []string{"-c", path})...), addrs: make(map[string]string)}
	b.p.waitLine(t, b.p.stderr, &b.pos, "the started line", func(l string) bool {
		if m := secListeningRE.FindStringSubmatch(l); m != nil {
			b.addrs[m[1]] = m[2]
		}
		return strings.Contains(l, `msg="iotd started"`)
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("iotd log:\n%s", b.p.stderr)
		}
	})
	return b
}

// addr returns the address of the listener named name.
func (b *secBroker) addr(t *testing.T, name string) string {
	t.Helper()
	a, ok := b.addrs[name]
	if !ok {
		t.Fatalf("iotd logged no listener %q (it logged %v)", name, b.addrs)
	}
	return a
}

// reload sends SIGHUP and returns the log line that reports the reload's end.
func (b *secBroker) reload(t *testing.T) string {
	t.Helper()
	if err := b.p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP: %v", err)
	}
	return b.p.waitLine(t, b.p.stderr, &b.pos, "the end of the reload", func(l string) bool {
		return strings.Contains(l, secReloadedMsg)
	})
}

// mustReload is reload for a reload that must succeed.
func (b *secBroker) mustReload(t *testing.T) string {
	t.Helper()
	line := b.reload(t)
	if !strings.Contains(line, " ok=true") {
		t.Fatalf("reload failed: %s\nlog:\n%s", line, b.p.stderr)
	}
	return line
}

// waitLog waits until iotd has logged a line that contains every one of parts.
func (b *secBroker) waitLog(t *testing.T, parts ...string) {
	t.Helper()
	iotdtest.Eventually(t, func() bool { return countLines(b.p.stderr.String(), parts...) > 0 },
		"a log line with %q", parts)
}

// secReplaceFile replaces path with content the way deployment tools do: the new content goes to
// a temporary file beside it, which is then renamed over path, so that no reader ever sees half
// a file.
func secReplaceFile(t *testing.T, path string, content []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// secPasswd runs `iotd passwd` with args and fails the test unless it succeeds.
func secPasswd(t *testing.T, args ...string) {
	t.Helper()
	code, stdout, stderr := runIotd(t, append([]string{"passwd"}, args...)...)
	if code != 0 {
		t.Fatalf("iotd passwd %q: exit code %d\nstdout:\n%s\nstderr:\n%s", args, code, stdout, stderr)
	}
}

// ---- raw MQTT clients ----

// secLogin describes a CONNECT: client id, optional username and password, optional will.
type secLogin struct {
	id       string
	user     string // "" with hasUser false: no username
	hasUser  bool
	password string // sent when hasPass
	hasPass  bool
	will     *packet.Will
}

// secUser returns a login as user (none when empty) with client id id and no password.
func secUser(id, user string) secLogin { return secLogin{id: id, user: user, hasUser: user != ""} }

// secUserPass returns a login as user with password.
func secUserPass(id, user, password string) secLogin {
	return secLogin{id: id, user: user, hasUser: true, password: password, hasPass: true}
}

func (l secLogin) packet() *packet.Connect {
	c := &packet.Connect{ClientID: l.id, CleanSession: true, KeepAlive: 60, Will: l.will,
		Username: l.user, HasUsername: l.hasUser}
	if l.hasPass {
		c.Password, c.HasPassword = []byte(l.password), true
	}
	return c
}

// secConnect dials addr and sends the CONNECT of l; it returns the client and the CONNACK.
func secConnect(t *testing.T, addr string, l secLogin) (*iotdtest.Client, *packet.Connack) {
	t.Helper()
	c := iotdtest.Dial(t, addr)
	return c, c.Connect(l.packet())
}

// secMustConnect is secConnect for a login that must be accepted.
func secMustConnect(t *testing.T, addr string, l secLogin) *iotdtest.Client {
	t.Helper()
	c, ack := secConnect(t, addr, l)
	if ack.ReturnCode != packet.Accepted {
		t.Fatalf("CONNACK %v for %+v, want accepted", ack.ReturnCode, l)
	}
	return c
}

// secExpectRefused checks a refusing CONNACK: the code is want, Session Present is 0
// ([MQTT-3.2.2-4]) and the server then closes the connection ([MQTT-3.2.2-5]).
func secExpectRefused(t *testing.T, c *iotdtest.Client, ack *packet.Connack, want packet.ConnackCode) {
	t.Helper()
	if ack.ReturnCode != want {
		t.Fatalf("CONNACK %v, want %v", ack.ReturnCode, want)
	}
	if ack.SessionPresent {
		t.Errorf("refusing CONNACK with Session Present set")
	}
	c.ExpectClosed()
}

// secPacketID numbers the packets of every raw client of these tests; parallel tests share it.
var secPacketID atomic.Uint32

// secNextID returns a packet identifier, never 0.
func secNextID() uint16 { return uint16(secPacketID.Add(1)%65535 + 1) }

// secSubscribe subscribes c to filters at QoS 0 and returns the SUBACK return codes.
func secSubscribe(t *testing.T, c *iotdtest.Client, filters ...string) []byte {
	t.Helper()
	return c.Subscribe(secNextID(), packet.QoS0, filters...)
}

// secMustSubscribe subscribes and fails unless every filter was granted QoS 0.
func secMustSubscribe(t *testing.T, c *iotdtest.Client, filters ...string) {
	t.Helper()
	for i, code := range secSubscribe(t, c, filters...) {
		if code != 0 {
			t.Fatalf("SUBACK code %#x for %q, want 0", code, filters[i])
		}
	}
}

// secPublish1 publishes at QoS 1 and waits for the PUBACK. The server handles one connection's
// packets in order, so once it has come, the message has been routed (or dropped) and whatever
// c publishes next reaches every subscriber after it.
func secPublish1(t *testing.T, c *iotdtest.Client, topic, payload string, retain bool) {
	t.Helper()
	id := secNextID()
	c.Send(&packet.Publish{QoS: packet.QoS1, PacketID: id, Topic: []byte(topic), Payload: []byte(payload), Retain: retain})
	p := c.Read()
	if ack, ok := p.(*packet.Puback); !ok || ack.PacketID != id {
		t.Fatalf("publish %s: expected PUBACK %d, got %T %+v", topic, id, p, p)
	}
}

// secExpect fails unless the next packet c receives is a PUBLISH of payload on topic with the
// given retain flag.
func secExpect(t *testing.T, c *iotdtest.Client, topic, payload string, retain bool) {
	t.Helper()
	p := c.ReadPublish()
	if string(p.Topic) != topic || string(p.Payload) != payload || p.Retain != retain {
		t.Fatalf("received %s %q retain=%t, want %s %q retain=%t", p.Topic, p.Payload, p.Retain, topic, payload, retain)
	}
}

// secExpectNothing proves that none of subs has a message on its way: pub publishes a marker on
// each subscriber's sync topic (the map's keys), and each must receive a marker before anything
// else. pub must be the client whose messages are being checked, so that they were routed before
// the markers. A subscriber whose filter also matches other sync topics may get another's marker
// first, which proves the same.
func secExpectNothing(t *testing.T, pub *iotdtest.Client, subs map[string]*iotdtest.Client) {
	t.Helper()
	for sync := range subs {
		secPublish1(t, pub, sync, "marker", false)
	}
	for sync, sub := range subs {
		p := sub.ReadPublish()
		if !strings.HasPrefix(string(p.Topic), "sync/") || string(p.Payload) != "marker" {
			t.Fatalf("subscriber of %s received %s %q, want nothing before a marker", sync, p.Topic, p.Payload)
		}
	}
}

// ---- TLS ----

// secClientTLS returns a client configuration that trusts pki's CA and, when certFile is not
// empty, presents that client certificate.
func secClientTLS(t *testing.T, pki *iotdtest.PKI, certFile, keyFile string) *tls.Config {
	t.Helper()
	ca, err := os.ReadFile(pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("no certificate in %s", pki.CAFile)
	}
	cfg := &tls.Config{RootCAs: pool}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		// Go's client would otherwise send only a certificate issued by a CA the server names
		// as acceptable, and send none from another CA; OpenSSL clients send what they are given.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return cfg
}

// secDialTLS dials addr and completes the TLS handshake; the connection is closed when the test
// ends.
func secDialTLS(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: iotdtest.Timeout}, Config: cfg}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { nc.Close() })
	return nc.(*tls.Conn), nil
}

// secTLSRefused connects to addr with cfg and checks that the broker refuses the TLS session and
// never answers a CONNECT, and that it logs the failed handshake with reason in it. It returns the
// error that showed the client the refusal.
//
// With TLS 1.2 the client's handshake fails. With TLS 1.3 the client has finished its side of the
// handshake before the server has looked at the client's certificate, so the server's alert
// arrives on the first read, after the CONNECT was sent: it must come instead of a CONNACK.
func (b *secBroker) secTLSRefused(t *testing.T, addr string, cfg *tls.Config, reason string) error {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, iotdtest.Timeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer nc.Close()
	local := nc.LocalAddr().String()
	cfg = cfg.Clone()
	cfg.ServerName, _, _ = net.SplitHostPort(addr) // what tls.Dial would verify the server's certificate against
	err = b.tlsRefused(t, nc, cfg)
	// The broker names the peer, so the line is this connection's.
	b.waitLog(t, `msg="TLS handshake failed"`, "remote="+local+" ", reason)
	return err
}

func (b *secBroker) tlsRefused(t *testing.T, nc net.Conn, cfg *tls.Config) error {
	t.Helper()
	c := tls.Client(nc, cfg)
	c.SetDeadline(time.Now().Add(iotdtest.Timeout))
	if err := c.Handshake(); err != nil {
		return err
	}
	connect := (&packet.Connect{ProtocolName: "MQTT", ProtocolLevel: packet.Version311, ClientID: newID("tls"),
		CleanSession: true, KeepAlive: 60}).Append(nil)
	if _, err := c.Write(connect); err != nil {
		return err
	}
	var buf [4]byte
	n, err := io.ReadAtLeast(c, buf[:], 1)
	var ne net.Error
	switch {
	case err == nil:
		t.Fatalf("TLS session accepted: received % x after CONNECT (%s)", buf[:n], tls.VersionName(c.ConnectionState().Version))
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("TLS session neither refused nor answered after %v", iotdtest.Timeout)
	}
	return err
}

// secLeaf returns the certificate the server presented on c.
func secLeaf(t *testing.T, c *tls.Conn) *x509.Certificate {
	t.Helper()
	certs := c.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		t.Fatal("the server presented no certificate")
	}
	return certs[0]
}

// secReadCert parses the first certificate of a PEM file.
func secReadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(path, strings.TrimSuffix(path, ".pem")+".key")
	if err != nil {
		t.Fatal(err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			t.Fatal(err)
		}
	}
	return cert.Leaf
}
