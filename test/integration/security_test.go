package integration

import (
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
)

// The tests of this file drive the real iotd binary through its security features (issue 6):
// TLS listeners and client certificates, password files, ACL files, and reloads on SIGHUP under
// live connections. Every broker is configured with a file, as an operator would.

// noLoginDelay turns the failed-login delay off: several tests fail logins on purpose from
// 127.0.0.1, and the default delay (1 s, doubling) would slow down every later refusal.
const noLoginDelay = "[limits]\nauth_fail_delay = \"0s\"\n"

// TestSecurityTLS runs a broker with a plain and a TLS listener that requires client
// certificates, and one whose TLS listener takes the client's identity from its certificate.
func TestSecurityTLS(t *testing.T) {
	t.Parallel()
	pki := iotdtest.NewPKI(t, "")
	// Every certificate is made before the parallel subtests: PKI is not safe for concurrent use.
	otherCert, otherKey := pki.Client(t, "client1", iotdtest.OtherCA())
	expiredCert, expiredKey := pki.Client(t, "client1", iotdtest.Expired())
	aliceCert, aliceKey := pki.Client(t, "alice")
	b := startSecBroker(t, "", noLoginDelay+fmt.Sprintf(`
[[listener]]
name = "plain"
address = "127.0.0.1:0"

[[listener]]
name = "tls"
type = "tls"
address = "127.0.0.1:0"
cert_file = %q
key_file = %q
ca_file = %q
client_auth = "required"
`, pki.ServerCert, pki.ServerKey, pki.CAFile))
	plain, secure := b.addr(t, "plain"), b.addr(t, "tls")
	valid := func() *tls.Config { return secClientTLS(t, pki, pki.ClientCert, pki.ClientKey) }

	t.Run("mosquitto_pub to mosquitto_sub over TLS", func(t *testing.T) {
		t.Parallel()
		needMosquitto(t)
		tlsArgs := []string{"--cafile", pki.CAFile, "--cert", pki.ClientCert, "--key", pki.ClientKey}
		sub := startMosqSub(t, secure, append([]string{"-i", newID("ms"), "-t", "tls/mosq"}, tlsArgs...)...)
		if got := sub.waitSubscribed(t); len(got) != 1 || got[0] != 0 {
			t.Fatalf("mosquitto_sub: SUBACK %v, want [0]", got)
		}
		args := append([]string{"-i", newID("mp"), "-t", "tls/mosq", "-m", "over TLS", "-q", "1"}, tlsArgs...)
		if code, out := runMosqPub(t, secure, args...); code != 0 {
			t.Fatalf("mosquitto_pub exited with %d:\n%s", code, out)
		}
		expect(t, sub, msg{Topic: "tls/mosq", Payload: "over TLS"})
	})

	t.Run("paho over TLS, plain client on the TCP listener", func(t *testing.T) {
		t.Parallel()
		raw := secMustConnect(t, plain, secUser(newID("plain"), ""))
		secMustSubscribe(t, raw, "tls/paho")
		opts := pahoOptions(&iotdtest.Env{Addr: secure}, newID("pt"))
		opts.Servers = nil
		opts.AddBroker("ssl://" + secure).SetTLSConfig(valid())
		c := newPaho(t, opts)
		c.mustConnect(t)
		c.subscribe(t, map[string]byte{"tls/to-paho": 1})
		wait(t, c.Publish("tls/paho", 1, false, "from paho over TLS"), "publish")
		secExpect(t, raw, "tls/paho", "from paho over TLS", false)
		secPublish1(t, raw, "tls/to-paho", "from plain TCP", false)
		expect(t, c, msg{Topic: "tls/to-paho", Payload: "from plain TCP", QoS: 1})
	})

	accepted := []struct {
		name string
		max  uint16
	}{
		{"TLS 1.2 with a valid client certificate", tls.VersionTLS12},
		{"TLS 1.3 with a valid client certificate", tls.VersionTLS13},
	}
	for _, tc := range accepted {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := valid()
			cfg.MaxVersion = tc.max
			nc, err := secDialTLS(t, secure, cfg)
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			if v := nc.ConnectionState().Version; v != tc.max {
				t.Fatalf("negotiated %s, want %s", tls.VersionName(v), tls.VersionName(tc.max))
			}
			c := iotdtest.Wrap(t, nc)
			c.MustConnect(newID("tls"), true)
			c.Ping()
		})
	}

	tls11 := valid()
	tls11.MinVersion, tls11.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	refused := []struct {
		name   string
		cfg    *tls.Config
		reason string // in the broker's log line
	}{
		{"client certificate from another CA", secClientTLS(t, pki, otherCert, otherKey), "unknown authority"},
		{"expired client certificate", secClientTLS(t, pki, expiredCert, expiredKey), "expired"},
		{"no client certificate", secClientTLS(t, pki, "", ""), "didn't provide a certificate"},
		{"valid certificate, client offers at most", tls11, "unsupported versions"},
	}
	for _, tc := range refused {
		// Each refusal is tried with both versions the broker speaks, since TLS 1.3 reports a
		// refused client certificate only after the client's handshake has finished.
		versions := []uint16{tls.VersionTLS12, tls.VersionTLS13}
		if tc.cfg.MaxVersion != 0 {
			versions = []uint16{tc.cfg.MaxVersion}
		}
		for _, v := range versions {
			t.Run(tc.name+" "+tls.VersionName(v), func(t *testing.T) {
				t.Parallel()
				cfg := tc.cfg.Clone()
				cfg.MaxVersion = v
				err := b.secTLSRefused(t, secure, cfg, tc.reason)
				t.Logf("refused: %v", err)
			})
		}
	}

	t.Run("client_auth optional with identity_from cn", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		passwd, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
		secPasswd(t, "-b", "-c", passwd, "bob", "bob-secret")
		writeFile(t, acl, "user alice\ntopic readwrite alice/#\nuser bob\ntopic readwrite bob/#\n")
		b := startSecBroker(t, dir, noLoginDelay+fmt.Sprintf(`
[auth]
password_file = %q
acl_file = %q

[[listener]]
name = "devices"
type = "tls"
address = "127.0.0.1:0"
cert_file = %q
key_file = %q
ca_file = %q
client_auth = "optional"
identity_from = "cn"
`, passwd, acl, pki.ServerCert, pki.ServerKey, pki.CAFile))
		addr := b.addr(t, "devices")
		alice := secClientTLS(t, pki, aliceCert, aliceKey)
		noCert := secClientTLS(t, pki, "", "")
		cases := []struct {
			name  string
			cfg   *tls.Config
			login secLogin
			want  packet.ConnackCode
			// granted and denied are filters the client may and may not subscribe to.
			granted, denied string
		}{
			{name: "certificate CN=alice, no username or password", cfg: alice, login: secUser(newID("cn"), ""),
				granted: "alice/#", denied: "bob/#"},
			{name: "certificate CN=alice replaces the username bob", cfg: alice,
				login: secUserPass(newID("cn"), "bob", "bob-secret"), granted: "alice/#", denied: "bob/#"},
			{name: "no certificate, bob's password", cfg: noCert, login: secUserPass(newID("pw"), "bob", "bob-secret"),
				granted: "bob/#", denied: "alice/#"},
			{name: "no certificate, wrong password", cfg: noCert, login: secUserPass(newID("pw"), "bob", "nope"),
				want: packet.RefusedBadUsernameOrPassword},
			{name: "MQTT-3.2.2-5 no certificate, no username", cfg: noCert, login: secUser(newID("anon"), ""),
				want: packet.RefusedNotAuthorized},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				nc, err := secDialTLS(t, addr, tc.cfg)
				if err != nil {
					t.Fatalf("handshake: %v", err)
				}
				c := iotdtest.Wrap(t, nc)
				ack := c.Connect(tc.login.packet())
				if tc.want != packet.Accepted {
					secExpectRefused(t, c, ack, tc.want)
					return
				}
				if ack.ReturnCode != packet.Accepted {
					t.Fatalf("CONNACK %v, want accepted", ack.ReturnCode)
				}
				if got := secSubscribe(t, c, tc.granted, tc.denied); got[0] != 0 || got[1] != packet.SubackFailure {
					t.Errorf("SUBACK %v for [%s %s], want [0 0x80]", got, tc.granted, tc.denied)
				}
			})
		}
		t.Run("certificate from another CA", func(t *testing.T) {
			err := b.secTLSRefused(t, addr, secClientTLS(t, pki, otherCert, otherKey), "unknown authority")
			t.Logf("refused: %v", err)
		})
	})
}

// TestSecurityPasswords logs in against a password file made by `iotd passwd` and, when it is
// installed, Mosquitto's mosquitto_passwd; and checks the delay after failed logins.
func TestSecurityPasswords(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	secPasswd(t, "-b", "-c", passwd, "alice", "alice-secret")
	secPasswd(t, "-b", passwd, "bob", "bob secret with spaces")
	haveMosq := false
	if _, err := os.Stat("/usr/bin/mosquitto_passwd"); err == nil {
		// mosquitto_passwd writes its own file; its line is appended to iotd's.
		mf := filepath.Join(dir, "mosquitto-passwd")
		out, err := exec.Command("/usr/bin/mosquitto_passwd", "-c", "-b", mf, "carol", "carol-secret").CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
		}
		line, err := os.ReadFile(mf)
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(passwd, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Write(line)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		haveMosq = true
	}
	b := startSecBroker(t, dir, noLoginDelay+fmt.Sprintf(`
[auth]
password_file = %q

[[listener]]
name = "main"
address = "127.0.0.1:0"

[[listener]]
name = "local"
address = "127.0.0.1:0"
allow_anonymous = true
`, passwd))

	cases := []struct {
		name     string
		listener string
		login    secLogin
		mosq     bool // needs the line made by mosquitto_passwd
		want     packet.ConnackCode
	}{
		{name: "iotd passwd user, right password", listener: "main", login: secUserPass(newID("pw"), "alice", "alice-secret")},
		{name: "password with spaces", listener: "main", login: secUserPass(newID("pw"), "bob", "bob secret with spaces")},
		{name: "mosquitto_passwd user, right password", listener: "main", mosq: true,
			login: secUserPass(newID("pw"), "carol", "carol-secret")},
		{name: "wrong password", listener: "main", login: secUserPass(newID("pw"), "alice", "alice-secreT"),
			want: packet.RefusedBadUsernameOrPassword},
		{name: "mosquitto_passwd user, wrong password", listener: "main", mosq: true,
			login: secUserPass(newID("pw"), "carol", "alice-secret"), want: packet.RefusedBadUsernameOrPassword},
		{name: "unknown user", listener: "main", login: secUserPass(newID("pw"), "mallory", "alice-secret"),
			want: packet.RefusedBadUsernameOrPassword},
		{name: "username without password", listener: "main", login: secUser(newID("pw"), "alice"),
			want: packet.RefusedBadUsernameOrPassword},
		{name: "MQTT-3.2.2-5 no username, anonymous off", listener: "main", login: secUser(newID("anon"), ""),
			want: packet.RefusedNotAuthorized},
		{name: "no username on the allow_anonymous listener", listener: "local", login: secUser(newID("anon"), "")},
		{name: "right password on the allow_anonymous listener", listener: "local",
			login: secUserPass(newID("pw"), "alice", "alice-secret")},
		{name: "wrong password on the allow_anonymous listener", listener: "local",
			login: secUserPass(newID("pw"), "alice", "wrong"), want: packet.RefusedBadUsernameOrPassword},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.mosq && !haveMosq {
				t.Skip("/usr/bin/mosquitto_passwd not installed (Debian package mosquitto)")
			}
			c, ack := secConnect(t, b.addr(t, tc.listener), tc.login)
			if tc.want != packet.Accepted {
				secExpectRefused(t, c, ack, tc.want)
				return
			}
			if ack.ReturnCode != packet.Accepted {
				t.Fatalf("CONNACK %v, want accepted", ack.ReturnCode)
			}
			c.Ping()
		})
	}

	t.Run("failed-login backoff", func(t *testing.T) {
		t.Parallel()
		b := startSecBroker(t, "", fmt.Sprintf(`
[auth]
password_file = %q

[limits]
auth_fail_delay = "300ms"

[[listener]]
name = "main"
address = "127.0.0.1:0"
`, passwd))
		addr := b.addr(t, "main")
		wrong := secUserPass(newID("guess"), "alice", "guess-1")
		c, ack := secConnect(t, addr, wrong)
		secExpectRefused(t, c, ack, packet.RefusedBadUsernameOrPassword)
		// The second failure from 127.0.0.1 is answered only after the delay. This is a lower
		// bound: a slow machine can only make it longer.
		c = iotdtest.Dial(t, addr)
		wrong.password = "guess-2"
		start := time.Now()
		ack = c.Connect(wrong.packet())
		took := time.Since(start)
		secExpectRefused(t, c, ack, packet.RefusedBadUsernameOrPassword)
		if took < 250*time.Millisecond {
			t.Errorf("second failed login answered after %v, want at least ~300ms", took)
		}
		b.waitLog(t, `msg="login failed: answer delayed"`, "delay=300ms")
		// A right password still gets in: the delay slows guessing but locks nobody out.
		c = secMustConnect(t, addr, secUserPass(newID("ok"), "alice", "alice-secret"))
		c.Ping()
	})
}

// secACL is the rule file of TestSecurityACL: the anonymous rules, alice and bob, an observer
// (admin) that may read everything a '#' rule can reach, a user allowed $SYS, and patterns.
// sync/# lets every client exchange markers (secExpectNothing).
const secACL = `# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic read sensors/#
topic deny sensors/secret
topic write wills/alice

user bob
topic write sensors/bob
topic write sensors/secret
topic write public/#
topic write users/+/inbox
topic write alice/#

user admin
topic read #

user sys
topic read $SYS/#

pattern readwrite clients/%c/#
pattern read users/%u/inbox
pattern readwrite sync/#
`

// TestSecurityACL checks a Mosquitto acl_file rule by rule with raw clients: what may be
// subscribed, what is routed, retained messages and wills.
func TestSecurityACL(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	acl := filepath.Join(dir, "acl")
	writeFile(t, acl, secACL)
	// No password file: usernames are taken as they come (as in Mosquitto), and the ACL sees them.
	b := startSecBroker(t, dir, noLoginDelay+fmt.Sprintf(`
[auth]
acl_file = %q

[[listener]]
name = "main"
address = "127.0.0.1:0"
`, acl))
	addr := b.addr(t, "main")

	subscribes := []struct {
		name    string
		id      string // client id; "" picks one
		user    string // "" is anonymous
		filters []string
		want    []byte
	}{
		{name: "anonymous reads public", filters: []string{"public/#"}, want: []byte{0}},
		{name: "MQTT-3.8.4-5 anonymous may not read alice", filters: []string{"alice/#"}, want: []byte{0x80}},
		{name: "alice reads her tree", user: "alice", filters: []string{"alice/#"}, want: []byte{0}},
		{name: "alice reads sensors", user: "alice", filters: []string{"sensors/#"}, want: []byte{0}},
		{name: "alice sensors/+ is covered by sensors/#", user: "alice", filters: []string{"sensors/+"}, want: []byte{0}},
		{name: "MQTT-3.8.4-5 alice denied sensors/secret", user: "alice", filters: []string{"sensors/secret"}, want: []byte{0x80}},
		{name: "MQTT-3.8.4-5 alice may not subscribe #", user: "alice", filters: []string{"#"}, want: []byte{0x80}},
		{name: "MQTT-3.8.4-5 bob's write-only topic is not readable", user: "bob", filters: []string{"sensors/bob"}, want: []byte{0x80}},
		{name: "MQTT-3.8.4-4 one SUBACK for allowed and denied filters", user: "alice",
			filters: []string{"alice/x", "bob/#", "sensors/a", "sensors/secret"}, want: []byte{0, 0x80, 0, 0x80}},
		{name: "pattern %c own client id", id: "dev1", user: "alice", filters: []string{"clients/dev1/#"}, want: []byte{0}},
		{name: "MQTT-3.8.4-5 pattern %c another client id", id: "dev2", user: "alice", filters: []string{"clients/dev1/#"}, want: []byte{0x80}},
		{name: "pattern %c applies to anonymous clients", id: "dev3", filters: []string{"clients/dev3/cmd"}, want: []byte{0}},
		{name: "pattern %u own inbox", user: "alice", filters: []string{"users/alice/inbox"}, want: []byte{0}},
		{name: "MQTT-3.8.4-5 pattern %u another user's inbox", user: "alice", filters: []string{"users/bob/inbox"}, want: []byte{0x80}},
		{name: "MQTT-4.7.2-1 $SYS not readable without a rule", user: "alice", filters: []string{"$SYS/#"}, want: []byte{0x80}},
		{name: "MQTT-4.7.2-1 a # rule does not reach $SYS", user: "admin", filters: []string{"$SYS/#", "#"}, want: []byte{0x80, 0}},
		{name: "$SYS readable with a rule naming it", user: "sys", filters: []string{"$SYS/#"}, want: []byte{0}},
	}
	t.Run("subscribe", func(t *testing.T) {
		for _, tc := range subscribes {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				id := tc.id
				if id == "" {
					id = newID("sub")
				}
				c := secMustConnect(t, addr, secUser(id, tc.user))
				got := secSubscribe(t, c, tc.filters...)
				if string(got) != string(tc.want) {
					t.Errorf("SUBACK % x for %q, want % x", got, tc.filters, tc.want)
				}
			})
		}
	})

	// The cases below share topics, so they run one after the other. Each subscriber also
	// subscribes to its own sync topic, on which the publisher sends a marker to prove that a
	// denied message is not on its way.
	type reader struct {
		user, filter string
		id           string // client id; "" picks one
	}
	publishes := []struct {
		name       string
		pubID      string // publisher's client id; "" picks one
		pubUser    string
		topic      string
		receive    []reader // may read it, and get it
		notReceive []reader // subscribed to a filter that matches it, but must not get it
	}{
		{name: "alice publishes in her tree", pubUser: "alice", topic: "alice/x",
			receive: []reader{{user: "alice", filter: "alice/#"}, {user: "admin", filter: "#"}}},
		{name: "bob's write rule on alice/#", pubUser: "bob", topic: "alice/from-bob",
			receive: []reader{{user: "alice", filter: "alice/#"}}},
		{name: "MQTT-3.3.5-2 anonymous may not write public", topic: "public/x",
			notReceive: []reader{{filter: "public/#"}, {user: "admin", filter: "#"}}},
		{name: "bob publishes to public", pubUser: "bob", topic: "public/news",
			receive: []reader{{filter: "public/#"}, {user: "admin", filter: "public/news"}}},
		{name: "MQTT-3.3.5-2 alice may not write sensors", pubUser: "alice", topic: "sensors/bob",
			notReceive: []reader{{user: "alice", filter: "sensors/#"}, {user: "admin", filter: "#"}}},
		{name: "alice's wildcard receives sensors/bob", pubUser: "bob", topic: "sensors/bob",
			receive: []reader{{user: "alice", filter: "sensors/#"}, {user: "alice", filter: "sensors/+"}}},
		{name: "alice's wildcard never delivers sensors/secret", pubUser: "bob", topic: "sensors/secret",
			receive:    []reader{{user: "admin", filter: "sensors/secret"}},
			notReceive: []reader{{user: "alice", filter: "sensors/#"}, {user: "alice", filter: "sensors/+"}}},
		{name: "pattern %c own client id", pubID: "car1", pubUser: "alice", topic: "clients/car1/state",
			receive: []reader{{user: "admin", filter: "clients/#"}}},
		{name: "MQTT-3.3.5-2 pattern %c another client id", pubID: "car2", pubUser: "alice", topic: "clients/car1/state",
			notReceive: []reader{{user: "admin", filter: "clients/#"}}},
		{name: "pattern %u inbox", pubUser: "bob", topic: "users/alice/inbox",
			receive: []reader{{user: "alice", filter: "users/alice/inbox"}, {user: "admin", filter: "users/#"}}},
	}
	t.Run("publish", func(t *testing.T) {
		for _, tc := range publishes {
			t.Run(tc.name, func(t *testing.T) {
				subscriber := func(r reader) (*iotdtest.Client, string) {
					id := r.id
					if id == "" {
						id = newID("r")
					}
					c := secMustConnect(t, addr, secUser(id, r.user))
					sync := "sync/" + id
					secMustSubscribe(t, c, r.filter, sync)
					return c, sync
				}
				var got, none []*iotdtest.Client
				syncs := make(map[string]*iotdtest.Client)
				for _, r := range tc.receive {
					c, sync := subscriber(r)
					got, syncs[sync] = append(got, c), c
				}
				for _, r := range tc.notReceive {
					c, sync := subscriber(r)
					none, syncs[sync] = append(none, c), c
				}
				pubID := tc.pubID
				if pubID == "" {
					pubID = newID("p")
				}
				pub := secMustConnect(t, addr, secUser(pubID, tc.pubUser))
				payload := newID("payload")
				// [MQTT-3.3.5-2] a denied QoS 1 PUBLISH is still acknowledged: MQTT 3.1.1 has no
				// way to refuse it.
				secPublish1(t, pub, tc.topic, payload, false)
				for _, c := range got {
					secExpect(t, c, tc.topic, payload, false)
				}
				secExpectNothing(t, pub, syncs)
			})
		}
	})

	t.Run("retained message on a denied topic", func(t *testing.T) {
		bob := secMustConnect(t, addr, secUser(newID("bob"), "bob"))
		secPublish1(t, bob, "sensors/secret", "retained secret", true)
		secPublish1(t, bob, "sensors/bob", "retained bob", true)
		t.Cleanup(func() {
			// Empty retained messages clear both for the tests that follow.
			secPublish1(t, bob, "sensors/secret", "", true)
			secPublish1(t, bob, "sensors/bob", "", true)
		})
		// The retained messages are queued right after the SUBACK, before the PINGRESP.
		alice := secMustConnect(t, addr, secUser(newID("alice"), "alice"))
		secMustSubscribe(t, alice, "sensors/#")
		secExpect(t, alice, "sensors/bob", "retained bob", true)
		alice.Ping()
		// The secret was retained: a reader allowed to see it gets it.
		admin := secMustConnect(t, addr, secUser(newID("admin"), "admin"))
		secMustSubscribe(t, admin, "sensors/secret")
		secExpect(t, admin, "sensors/secret", "retained secret", true)
		admin.Ping()
	})

	t.Run("MQTT-3.3.5-2 denied retained publish is not stored", func(t *testing.T) {
		anon := secMustConnect(t, addr, secUser(newID("anon"), ""))
		secPublish1(t, anon, "public/denied-retained", "not stored", true)
		// Had it been stored, it would be queued right after the SUBACK, before the PINGRESP.
		admin := secMustConnect(t, addr, secUser(newID("admin"), "admin"))
		secMustSubscribe(t, admin, "public/#")
		admin.Ping()
	})

	t.Run("will on a topic the subscriber may not read", func(t *testing.T) {
		alice := secMustConnect(t, addr, secUser(newID("alice"), "alice"))
		secMustSubscribe(t, alice, "sensors/#", "sync/alice-will")
		admin := secMustConnect(t, addr, secUser(newID("admin"), "admin"))
		secMustSubscribe(t, admin, "sensors/secret")
		bob := secMustConnect(t, addr, secLogin{id: newID("bob"), user: "bob", hasUser: true,
			will: &packet.Will{Topic: "sensors/secret", Payload: []byte("bob is gone")}})
		bob.Conn.Close() // no DISCONNECT: the will is published
		secExpect(t, admin, "sensors/secret", "bob is gone", false)
		// The will was routed before admin got it, and so before the marker.
		marker := newID("marker")
		pub := secMustConnect(t, addr, secUser(newID("p"), ""))
		secPublish1(t, pub, "sync/alice-will", marker, false)
		secExpect(t, alice, "sync/alice-will", marker, false)
	})

	wills := []struct {
		name  string
		login secLogin
		want  packet.ConnackCode
	}{
		{name: "will on a writable topic is accepted", login: secLogin{id: newID("w"), user: "alice", hasUser: true,
			will: &packet.Will{Topic: "wills/alice", Payload: []byte("x")}}},
		{name: "MQTT-3.2.2-5 will on a topic bob may not write", login: secLogin{id: newID("w"), user: "bob", hasUser: true,
			will: &packet.Will{Topic: "wills/alice", Payload: []byte("x")}}, want: packet.RefusedNotAuthorized},
		{name: "MQTT-3.2.2-5 anonymous will on a read-only topic", login: secLogin{id: newID("w"),
			will: &packet.Will{Topic: "public/x", Payload: []byte("x")}}, want: packet.RefusedNotAuthorized},
	}
	t.Run("will topic must be writable", func(t *testing.T) {
		for _, tc := range wills {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				c, ack := secConnect(t, addr, tc.login)
				if tc.want != packet.Accepted {
					secExpectRefused(t, c, ack, tc.want)
					return
				}
				if ack.ReturnCode != packet.Accepted {
					t.Fatalf("CONNACK %v, want accepted", ack.ReturnCode)
				}
				c.Send(&packet.Disconnect{})
			})
		}
	})
}

// TestSecurityReload changes users, rules and certificates under live connections and reloads
// them with SIGHUP.
func TestSecurityReload(t *testing.T) {
	t.Parallel()

	// passwordBroker starts a broker with a password file of the given users (password
	// "<user>-1") and returns it with the file's path.
	passwordBroker := func(t *testing.T, users ...string) (*secBroker, string) {
		dir := t.TempDir()
		passwd := filepath.Join(dir, "passwd")
		for i, u := range users {
			args := []string{"-b", passwd, u, u + "-1"}
			if i == 0 {
				args = append([]string{"-c"}, args...)
			}
			secPasswd(t, args...)
		}
		return startSecBroker(t, dir, noLoginDelay+fmt.Sprintf(`
[auth]
password_file = %q
disconnect_on_revoke = true

[[listener]]
name = "main"
address = "127.0.0.1:0"
`, passwd)), passwd
	}

	t.Run("password change keeps connected clients", func(t *testing.T) {
		t.Parallel()
		b, passwd := passwordBroker(t, "alice")
		addr := b.addr(t, "main")
		live := secMustConnect(t, addr, secUserPass(newID("live"), "alice", "alice-1"))
		secPasswd(t, "-b", passwd, "alice", "alice-2")
		b.mustReload(t)
		live.Ping()
		c, ack := secConnect(t, addr, secUserPass(newID("old"), "alice", "alice-1"))
		secExpectRefused(t, c, ack, packet.RefusedBadUsernameOrPassword)
		secMustConnect(t, addr, secUserPass(newID("new"), "alice", "alice-2")).Ping()
		live.Ping()
	})

	t.Run("removed user is disconnected", func(t *testing.T) {
		t.Parallel()
		b, passwd := passwordBroker(t, "alice", "bob")
		addr := b.addr(t, "main")
		alice := secMustConnect(t, addr, secUserPass(newID("alice"), "alice", "alice-1"))
		bobID := newID("bob")
		bob := secMustConnect(t, addr, secUserPass(bobID, "bob", "bob-1"))
		secPasswd(t, "-D", passwd, "bob")
		if line := b.mustReload(t); !strings.Contains(line, "disconnected=1") {
			t.Errorf("reload line %q, want disconnected=1", line)
		}
		bob.ExpectClosed()
		b.waitLog(t, `msg="access revoked: disconnecting"`, "client_id="+bobID)
		alice.Ping()
		c, ack := secConnect(t, addr, secUserPass(newID("bob"), "bob", "bob-1"))
		secExpectRefused(t, c, ack, packet.RefusedBadUsernameOrPassword)
	})

	t.Run("removed password user on an identity_from listener is disconnected", func(t *testing.T) {
		t.Parallel()
		// A client that logged in with a password on a listener that also takes certificate
		// identities is judged by the password file, not as a certificate identity.
		pki := iotdtest.NewPKI(t, "")
		dir := t.TempDir()
		passwd := filepath.Join(dir, "passwd")
		secPasswd(t, "-b", "-c", passwd, "alice", "alice-1")
		secPasswd(t, "-b", passwd, "bob", "bob-1")
		b := startSecBroker(t, dir, noLoginDelay+fmt.Sprintf(`
[auth]
password_file = %q

[[listener]]
name = "devices"
type = "tls"
address = "127.0.0.1:0"
cert_file = %q
key_file = %q
ca_file = %q
client_auth = "optional"
identity_from = "cn"
`, passwd, pki.ServerCert, pki.ServerKey, pki.CAFile))
		addr := b.addr(t, "devices")
		login := func(user string) *iotdtest.Client {
			nc, err := secDialTLS(t, addr, secClientTLS(t, pki, "", ""))
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			c := iotdtest.Wrap(t, nc)
			if ack := c.Connect(secUserPass(newID(user), user, user+"-1").packet()); ack.ReturnCode != packet.Accepted {
				t.Fatalf("%s: CONNACK %v, want accepted", user, ack.ReturnCode)
			}
			return c
		}
		alice, bob := login("alice"), login("bob")
		secPasswd(t, "-D", passwd, "bob")
		if line := b.mustReload(t); !strings.Contains(line, "disconnected=1") {
			t.Errorf("reload line %q, want disconnected=1", line)
		}
		bob.ExpectClosed()
		alice.Ping()
	})

	t.Run("ACL change applies to existing subscriptions", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		acl := filepath.Join(dir, "acl")
		const base = "user alice\ntopic read sensors/#\nuser pub\ntopic write #\npattern readwrite sync/#\n"
		writeFile(t, acl, base)
		b := startSecBroker(t, dir, noLoginDelay+fmt.Sprintf("[auth]\nacl_file = %q\n\n[[listener]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n", acl))
		addr := b.addr(t, "main")
		alice := secMustConnect(t, addr, secUser(newID("alice"), "alice"))
		secMustSubscribe(t, alice, "sensors/#", "sync/alice-acl")
		if got := secSubscribe(t, alice, "other/#"); got[0] != packet.SubackFailure {
			t.Fatalf("other/# before the reload: SUBACK %#x, want 0x80", got[0])
		}
		pub := secMustConnect(t, addr, secUser(newID("pub"), "pub"))
		secPublish1(t, pub, "sensors/b", "before", false)
		secExpect(t, alice, "sensors/b", "before", false)

		secReplaceFile(t, acl, []byte(base+"user alice\ntopic deny sensors/b\ntopic read other/#\n"))
		b.mustReload(t)
		secPublish1(t, pub, "sensors/b", "after", false)
		secPublish1(t, pub, "sensors/a", "still allowed", false)
		secExpect(t, alice, "sensors/a", "still allowed", false)
		secExpectNothing(t, pub, map[string]*iotdtest.Client{"sync/alice-acl": alice})
		secMustSubscribe(t, alice, "other/#")
		secPublish1(t, pub, "other/x", "newly allowed", false)
		secExpect(t, alice, "other/x", "newly allowed", false)
	})

	t.Run("certificate change", func(t *testing.T) {
		t.Parallel()
		pki := iotdtest.NewPKI(t, "")
		// The listener's files are copies that the test replaces, as a certificate manager would.
		certFile, keyFile := filepath.Join(pki.Dir, "live.pem"), filepath.Join(pki.Dir, "live.key")
		for dst, src := range map[string]string{certFile: pki.ServerCert, keyFile: pki.ServerKey} {
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			writeFile(t, dst, string(data))
		}
		newCert, newKey := pki.Server(t, "server2")
		b := startSecBroker(t, "", noLoginDelay+fmt.Sprintf(`
[[listener]]
name = "tls"
type = "tls"
address = "127.0.0.1:0"
cert_file = %q
key_file = %q
`, certFile, keyFile))
		addr := b.addr(t, "tls")
		cfg := secClientTLS(t, pki, "", "")
		nc, err := secDialTLS(t, addr, cfg)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		oldLeaf, want := secLeaf(t, nc), secReadCert(t, newCert)
		if first := secReadCert(t, pki.ServerCert); oldLeaf.SerialNumber.Cmp(first.SerialNumber) != 0 {
			t.Fatalf("first handshake: serial %x, want the configured certificate's %x", oldLeaf.SerialNumber, first.SerialNumber)
		}
		live := iotdtest.Wrap(t, nc)
		live.MustConnect(newID("live"), true)

		for dst, src := range map[string]string{keyFile: newKey, certFile: newCert} {
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			secReplaceFile(t, dst, data)
		}
		b.mustReload(t)
		live.Ping()
		nc2, err := secDialTLS(t, addr, cfg)
		if err != nil {
			t.Fatalf("handshake after the reload: %v", err)
		}
		got := secLeaf(t, nc2)
		if got.SerialNumber.Cmp(want.SerialNumber) != 0 || got.Subject.CommonName != "server2" {
			t.Fatalf("new handshake got serial %x %s, want the new certificate %x %s",
				got.SerialNumber, got.Subject, want.SerialNumber, want.Subject)
		}
		c := iotdtest.Wrap(t, nc2)
		c.MustConnect(newID("new"), true)
		c.Ping()
		live.Ping()

		// A certificate file that does not load leaves the last good one in use.
		secReplaceFile(t, certFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"))
		if line := b.reload(t); !strings.Contains(line, " ok=false") {
			t.Fatalf("reload of a broken certificate: %s, want ok=false", line)
		}
		b.waitLog(t, "level=ERROR", `msg="reload: certificate kept as it was"`, "listener=tls")
		nc3, err := secDialTLS(t, addr, cfg)
		if err != nil {
			t.Fatalf("handshake after the failed reload: %v", err)
		}
		if got := secLeaf(t, nc3); got.SerialNumber.Cmp(want.SerialNumber) != 0 {
			t.Fatalf("after a failed reload the server presents serial %x %s, want the last good one %x",
				got.SerialNumber, got.Subject, want.SerialNumber)
		}
		live.Ping()
	})

	t.Run("broken ACL file keeps the old rules", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		acl := filepath.Join(dir, "acl")
		writeFile(t, acl, "user alice\ntopic read sensors/#\nuser pub\ntopic write #\n")
		b := startSecBroker(t, dir, noLoginDelay+fmt.Sprintf("[auth]\nacl_file = %q\n\n[[listener]]\nname = \"main\"\naddress = \"127.0.0.1:0\"\n", acl))
		addr := b.addr(t, "main")
		alice := secMustConnect(t, addr, secUser(newID("alice"), "alice"))
		secMustSubscribe(t, alice, "sensors/#")

		secReplaceFile(t, acl, []byte("user alice\ntopic read other/#\ntopic frobnicate sensors/#\n"))
		if line := b.reload(t); !strings.Contains(line, " ok=false") {
			t.Fatalf("reload of a broken file: %s, want ok=false", line)
		}
		b.waitLog(t, "level=ERROR", `msg="reload: users and ACLs kept as they were"`, acl)
		pub := secMustConnect(t, addr, secUser(newID("pub"), "pub"))
		secPublish1(t, pub, "sensors/a", "old rules", false)
		secExpect(t, alice, "sensors/a", "old rules", false)
		if got := secSubscribe(t, alice, "other/#", "sensors/x"); string(got) != "\x80\x00" {
			t.Errorf("SUBACK % x for [other/# sensors/x], want 80 00 (the old rules)", got)
		}
	})
}
