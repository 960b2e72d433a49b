package config

import (
	"fmt"
	"math"
	"reflect"
	"testing"
	"time"
)

// tlsListener is a valid "tls" listener with a certificate and no client
// certificates.
func tlsListener(name, address string) Listener {
	return Listener{Name: name, Type: "tls", Address: address, CertFile: "cert.pem", KeyFile: "key.pem",
		ClientAuth: "none", MinTLSVersion: "1.2"}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		// want lists the expected errors as path and message, in order; nil
		// means the config is valid.
		want []FieldError
	}{
		{name: "defaults", mutate: func(*Config) {}},

		// Listeners.
		{name: "no listeners", mutate: func(c *Config) { c.Listeners = nil },
			want: []FieldError{{"listener", "at least one listener is required"}}},
		{name: "empty listener name", mutate: func(c *Config) { c.Listeners[0].Name = "" },
			want: []FieldError{{"listener[0].name", "must not be empty"}}},
		{name: "unknown listener type", mutate: func(c *Config) { c.Listeners[0].Type = "udp" },
			want: []FieldError{{"listener[0].type", `must be one of "tcp", "tls", got "udp"`}}},
		{name: "empty listener type", mutate: func(c *Config) { c.Listeners[0].Type = "" },
			want: []FieldError{{"listener[0].type", `must be one of "tcp", "tls", got ""`}}},
		{name: "empty address", mutate: func(c *Config) { c.Listeners[0].Address = "" },
			want: []FieldError{{"listener[0].address", `is required (host:port, for example "0.0.0.0:1883")`}}},
		{name: "address without port", mutate: func(c *Config) { c.Listeners[0].Address = "localhost" },
			want: []FieldError{{"listener[0].address", `must be host:port, got "localhost"`}}},
		{name: "address with empty port", mutate: func(c *Config) { c.Listeners[0].Address = "localhost:" },
			want: []FieldError{{"listener[0].address", `port must be a number between 0 and 65535, got ""`}}},
		{name: "named port", mutate: func(c *Config) { c.Listeners[0].Address = "localhost:mqtt" },
			want: []FieldError{{"listener[0].address", `port must be a number between 0 and 65535, got "mqtt"`}}},
		{name: "port too large", mutate: func(c *Config) { c.Listeners[0].Address = ":65536" },
			want: []FieldError{{"listener[0].address", `port must be a number between 0 and 65535, got "65536"`}}},
		{name: "negative port", mutate: func(c *Config) { c.Listeners[0].Address = ":-1" },
			want: []FieldError{{"listener[0].address", `port must be a number between 0 and 65535, got "-1"`}}},
		{name: "valid addresses", mutate: func(c *Config) {
			c.Listeners = []Listener{
				{Name: "a", Type: "tcp", Address: ":1883"},
				{Name: "b", Type: "tcp", Address: "127.0.0.1:65535"},
				{Name: "c", Type: "tcp", Address: "[::1]:1883"},
				{Name: "d", Type: "tcp", Address: "localhost:0"},
				{Name: "e", Type: "tcp", Address: "localhost:0"},
			}
		}},
		{name: "duplicate names", mutate: func(c *Config) {
			c.Listeners = []Listener{
				{Name: "a", Type: "tcp", Address: ":1883"},
				{Name: "b", Type: "tcp", Address: ":1884"},
				{Name: "a", Type: "tcp", Address: ":1885"},
			}
		}, want: []FieldError{{"listener[2].name", `duplicate name "a", also used by listener[0]`}}},
		{name: "duplicate addresses", mutate: func(c *Config) {
			c.Listeners = []Listener{
				{Name: "a", Type: "tcp", Address: "127.0.0.1:1883"},
				{Name: "b", Type: "tcp", Address: "127.0.0.1:01883"},
			}
		}, want: []FieldError{{"listener[1].address", `duplicate address "127.0.0.1:01883", also used by listener[0]`}}},
		{name: "duplicate address across tcp and tls", mutate: func(c *Config) {
			c.Listeners = []Listener{
				{Name: "a", Type: "tcp", Address: ":8883"},
				tlsListener("b", ":8883"),
			}
		}, want: []FieldError{{"listener[1].address", `duplicate address ":8883", also used by listener[0]`}}},
		{name: "listener built in code leaves TLS defaults empty", mutate: func(c *Config) {
			c.Listeners = []Listener{{Name: "listen-0", Type: "tcp", Address: ":1883"}}
		}},

		// TLS listeners.
		{name: "tls listener", mutate: func(c *Config) { c.Listeners = []Listener{tlsListener("tls-0", ":8883")} }},
		{name: "tls listener with empty client_auth and min_tls_version", mutate: func(c *Config) {
			l := tlsListener("tls-0", ":8883")
			l.ClientAuth, l.MinTLSVersion = "", ""
			c.Listeners = []Listener{l}
		}},
		{name: "tls listener with client certificates", mutate: func(c *Config) {
			for i, auth := range []string{"optional", "required"} {
				for j, from := range []string{"", "cn", "san-dns", "san-email", "san-uri"} {
					l := tlsListener(fmt.Sprintf("tls-%d-%d", i, j), ":0")
					l.CAFile, l.ClientAuth, l.IdentityFrom, l.MinTLSVersion = "ca.pem", auth, from, "1.3"
					c.Listeners = append(c.Listeners, l)
				}
			}
		}},
		{name: "tls listener without files", mutate: func(c *Config) {
			c.Listeners = []Listener{{Name: "tls-0", Type: "tls", Address: ":8883", ClientAuth: "required", IdentityFrom: "cn"}}
		}, want: []FieldError{
			{"listener[0].cert_file", "is required for a tls listener (PEM certificate chain)"},
			{"listener[0].key_file", "is required for a tls listener (PEM private key)"},
			{"listener[0].ca_file", `is required when client_auth is "required" (the CAs that client certificates must chain to)`},
		}},
		{name: "optional client_auth needs ca_file", mutate: func(c *Config) {
			l := tlsListener("tls-0", ":8883")
			l.ClientAuth = "optional"
			c.Listeners = []Listener{l}
		}, want: []FieldError{
			{"listener[0].ca_file", `is required when client_auth is "optional" (the CAs that client certificates must chain to)`},
		}},
		{name: "ca_file without client_auth", mutate: func(c *Config) {
			l := tlsListener("tls-0", ":8883")
			l.CAFile = "ca.pem"
			c.Listeners = []Listener{l}
		}, want: []FieldError{
			{"listener[0].ca_file", `is set but client_auth is "none", so no client certificate is verified; set client_auth to "optional" or "required", or remove ca_file`},
		}},
		{name: "bad tls values", mutate: func(c *Config) {
			l := tlsListener("tls-0", ":8883")
			l.CAFile, l.ClientAuth, l.IdentityFrom, l.MinTLSVersion = "ca.pem", "always", "subject", "1.1"
			c.Listeners = []Listener{l}
		}, want: []FieldError{
			{"listener[0].client_auth", `must be one of "none", "optional", "required", got "always"`},
			{"listener[0].identity_from", `must be one of "cn", "san-dns", "san-email", "san-uri", got "subject"`},
			{"listener[0].min_tls_version", `must be one of "1.2", "1.3", got "1.1"`},
		}},
		{name: "identity_from needs client certificates", mutate: func(c *Config) {
			l := tlsListener("tls-0", ":8883")
			l.IdentityFrom = "cn"
			c.Listeners = []Listener{l}
		}, want: []FieldError{
			{"listener[0].identity_from", `needs client_auth "optional" or "required": with "none" there is no client certificate`},
		}},
		{name: "tls keys on a tcp listener", mutate: func(c *Config) {
			l := &c.Listeners[0]
			l.CertFile, l.KeyFile, l.CAFile = "c.pem", "k.pem", "ca.pem"
			l.ClientAuth, l.IdentityFrom, l.MinTLSVersion = "required", "cn", "1.3"
		}, want: []FieldError{
			{"listener[0].cert_file", `only applies to type "tls", not "tcp"`},
			{"listener[0].key_file", `only applies to type "tls", not "tcp"`},
			{"listener[0].ca_file", `only applies to type "tls", not "tcp"`},
			{"listener[0].client_auth", `only applies to type "tls", not "tcp"`},
			{"listener[0].identity_from", `only applies to type "tls", not "tcp"`},
			{"listener[0].min_tls_version", `only applies to type "tls", not "tcp"`},
		}},
		{name: "bad address and tls problems together", mutate: func(c *Config) {
			c.Listeners = []Listener{{Name: "tls-0", Type: "tls", Address: "nowhere", KeyFile: "k.pem"}}
		}, want: []FieldError{
			{"listener[0].address", `must be host:port, got "nowhere"`},
			{"listener[0].cert_file", "is required for a tls listener (PEM certificate chain)"},
		}},

		// Limits.
		{name: "max_packet_size minimum", mutate: func(c *Config) { c.Limits.MaxPacketSize = 16 }},
		{name: "max_packet_size maximum", mutate: func(c *Config) { c.Limits.MaxPacketSize = 268435460 }},
		{name: "max_packet_size too small", mutate: func(c *Config) { c.Limits.MaxPacketSize = 3 },
			want: []FieldError{{"limits.max_packet_size", "must be between 16 and 268435460, got 3"}}},
		{name: "max_packet_size too large", mutate: func(c *Config) { c.Limits.MaxPacketSize = 268435461 },
			want: []FieldError{{"limits.max_packet_size", "must be between 16 and 268435460, got 268435461"}}},
		{name: "max_connections set", mutate: func(c *Config) { c.Limits.MaxConnections = 10000 }},
		{name: "max_connections negative", mutate: func(c *Config) { c.Limits.MaxConnections = -1 },
			want: []FieldError{{"limits.max_connections", "must be 0 or more, got -1"}}},
		{name: "connect_timeout minimum", mutate: func(c *Config) { c.Limits.ConnectTimeout = Duration(100 * time.Millisecond) }},
		{name: "connect_timeout maximum", mutate: func(c *Config) { c.Limits.ConnectTimeout = Duration(10 * time.Minute) }},
		{name: "connect_timeout too short", mutate: func(c *Config) { c.Limits.ConnectTimeout = Duration(99 * time.Millisecond) },
			want: []FieldError{{"limits.connect_timeout", "must be between 100ms and 10m0s, got 99ms"}}},
		{name: "connect_timeout too long", mutate: func(c *Config) { c.Limits.ConnectTimeout = Duration(11 * time.Minute) },
			want: []FieldError{{"limits.connect_timeout", "must be between 100ms and 10m0s, got 11m0s"}}},
		{name: "max_pending_bytes minimum", mutate: func(c *Config) { c.Limits.MaxPendingBytes = 4096 }},
		{name: "max_pending_bytes too small", mutate: func(c *Config) { c.Limits.MaxPendingBytes = 4095 },
			want: []FieldError{{"limits.max_pending_bytes", "must be at least 4096, got 4095"}}},
		{name: "connection rates set", mutate: func(c *Config) {
			c.Limits.ConnectionRate, c.Limits.ConnectionBurst = 0.5, 3
			c.Limits.TotalConnectionRate, c.Limits.TotalConnectionBurst = 1000, 2000
		}},
		{name: "connection rates negative", mutate: func(c *Config) {
			c.Limits.ConnectionRate, c.Limits.ConnectionBurst = -1, -1
			c.Limits.TotalConnectionRate, c.Limits.TotalConnectionBurst = -0.5, -2
		}, want: []FieldError{
			{"limits.connection_rate", "must be a number of connections per second, 0 (no limit) or more, got -1"},
			{"limits.connection_burst", "must be 0 or more, got -1"},
			{"limits.total_connection_rate", "must be a number of connections per second, 0 (no limit) or more, got -0.5"},
			{"limits.total_connection_burst", "must be 0 or more, got -2"},
		}},
		{name: "connection rates not finite", mutate: func(c *Config) {
			c.Limits.ConnectionRate, c.Limits.TotalConnectionRate = math.NaN(), math.Inf(1)
		}, want: []FieldError{
			{"limits.connection_rate", "must be a number of connections per second, 0 (no limit) or more, got NaN"},
			{"limits.total_connection_rate", "must be a number of connections per second, 0 (no limit) or more, got +Inf"},
		}},
		{name: "auth_fail_delay off", mutate: func(c *Config) { c.Limits.AuthFailDelay, c.Limits.AuthFailMaxDelay = 0, 0 }},
		{name: "auth_fail_max_delay equal to auth_fail_delay", mutate: func(c *Config) {
			c.Limits.AuthFailDelay, c.Limits.AuthFailMaxDelay = Duration(time.Second), Duration(time.Second)
		}},
		{name: "auth_fail_max_delay below auth_fail_delay", mutate: func(c *Config) {
			c.Limits.AuthFailDelay, c.Limits.AuthFailMaxDelay = Duration(2*time.Second), Duration(time.Second)
		}, want: []FieldError{{"limits.auth_fail_max_delay", "must be at least limits.auth_fail_delay (2s), got 1s"}}},
		{name: "auth fail delays negative", mutate: func(c *Config) {
			c.Limits.AuthFailDelay, c.Limits.AuthFailMaxDelay = Duration(-time.Second), Duration(-time.Second)
		}, want: []FieldError{
			{"limits.auth_fail_delay", "must be 0s (off) or more, got -1s"},
			{"limits.auth_fail_max_delay", "must be 0s or more, got -1s"},
		}},

		// Keep alive.
		{name: "keepalive.max maximum", mutate: func(c *Config) { c.KeepAlive.Max = 65535 }},
		{name: "keepalive.max too large", mutate: func(c *Config) { c.KeepAlive.Max = 65536 },
			want: []FieldError{{"keepalive.max", "must be between 0 and 65535, got 65536"}}},
		{name: "keepalive.max negative", mutate: func(c *Config) { c.KeepAlive.Max = -1 },
			want: []FieldError{{"keepalive.max", "must be between 0 and 65535, got -1"}}},

		// Retained.
		{name: "retained unlimited", mutate: func(c *Config) { c.Retained.MaxMessages = 0 }},
		{name: "retained.max_messages negative", mutate: func(c *Config) { c.Retained.MaxMessages = -5 },
			want: []FieldError{{"retained.max_messages", "must be 0 or more, got -5"}}},
		{name: "retained.max_payload_size set", mutate: func(c *Config) { c.Retained.MaxPayloadSize = 1024 }},
		{name: "session.max_inflight_messages zero", mutate: func(c *Config) { c.Session.MaxInflightMessages = 0 },
			want: []FieldError{{"session.max_inflight_messages", "must be between 1 and 65535, got 0"}}},
		{name: "session.max_queued_bytes negative", mutate: func(c *Config) { c.Session.MaxQueuedBytes = -1 },
			want: []FieldError{{"session.max_queued_bytes", "must be 0 or more, got -1"}}},
		{name: "session durations", mutate: func(c *Config) {
			c.Session.RetryInterval, c.Session.RetryMaxInterval, c.Session.Expiry = -1, 0, -1
		}, want: []FieldError{
			{"session.retry_interval", "must be 0s (off) or more, got -1ns"},
			{"session.retry_max_interval", "must be greater than 0s, got 0s"},
			{"session.expiry", "must be 0s (never) or more, got -1ns"},
		}},
		{name: "session.max_queued_messages zero", mutate: func(c *Config) { c.Session.MaxQueuedMessages = 0 }},
		{name: "session.max_queued_messages negative", mutate: func(c *Config) { c.Session.MaxQueuedMessages = -1 },
			want: []FieldError{{"session.max_queued_messages", "must be 0 or more, got -1"}}},
		{name: "retained.max_payload_size negative", mutate: func(c *Config) { c.Retained.MaxPayloadSize = -1 },
			want: []FieldError{{"retained.max_payload_size", "must be 0 or more, got -1"}}},

		// Store.
		{name: "store backends", mutate: func(c *Config) { c.Store.Backend = "sqlite" }},
		{name: "memory store needs no dir", mutate: func(c *Config) { c.Store.Backend, c.Store.Dir = "memory", "" }},
		{name: "store fsync interval", mutate: func(c *Config) {
			c.Store.Fsync, c.Store.FsyncInterval, c.Store.OnCorrupt = "interval", Duration(time.Millisecond), "move-aside"
		}},
		{name: "store fsync never", mutate: func(c *Config) { c.Store.Fsync, c.Store.FsyncInterval = "never", Duration(10*time.Second) }},
		{name: "store problems", mutate: func(c *Config) {
			c.Store = Store{Backend: "bolt", Fsync: "sometimes", FsyncInterval: Duration(999 * time.Microsecond), OnCorrupt: "ignore"}
		}, want: []FieldError{
			{"store.backend", `must be one of "file", "sqlite", "memory", got "bolt"`},
			{"store.dir", `must not be empty (it is only optional with backend "memory")`},
			{"store.fsync", `must be one of "always", "interval", "never", got "sometimes"`},
			{"store.fsync_interval", "must be between 1ms and 10s, got 999µs"},
			{"store.on_corrupt", `must be one of "fail", "move-aside", got "ignore"`},
		}},
		{name: "store dir empty for the file backend", mutate: func(c *Config) { c.Store.Dir = "" },
			want: []FieldError{{"store.dir", `must not be empty (it is only optional with backend "memory")`}}},
		{name: "store fsync_interval too long", mutate: func(c *Config) { c.Store.FsyncInterval = Duration(11 * time.Second) },
			want: []FieldError{{"store.fsync_interval", "must be between 1ms and 10s, got 11s"}}},

		// Auth.
		{name: "auth files", mutate: func(c *Config) {
			c.Auth.PasswordFile, c.Auth.ACLFile, c.Auth.AllowAnonymous = "passwd", "acl", new(false)
		}},
		{name: "auth cache off", mutate: func(c *Config) { c.Auth.CacheTTL, c.Auth.DisconnectOnRevoke = 0, false }},
		{name: "auth cache_ttl negative", mutate: func(c *Config) { c.Auth.CacheTTL = Duration(-time.Minute) },
			want: []FieldError{{"auth.cache_ttl", "must be 0s (no cache) or more, got -1m0s"}}},
		{name: "no login possible anywhere", mutate: func(c *Config) {
			c.Auth.AllowAnonymous = new(false)
			c.Listeners = []Listener{tcpListener("a", ":1"), tcpListener("b", ":2")}
		}, want: []FieldError{
			{"auth.allow_anonymous", `is false but auth.password_file is empty, so no client can log in on listener "a", "b" (set identity_from to use client certificates)`},
		}},
		{name: "no login possible on one listener", mutate: func(c *Config) {
			c.Listeners = []Listener{tcpListener("a", ":1"), tcpListener("b", ":2")}
			c.Listeners[1].AllowAnonymous = new(false)
		}, want: []FieldError{
			{"listener[1].allow_anonymous", "is false but auth.password_file is empty and identity_from is not set, so no client can log in on this listener"},
		}},
		{name: "anonymous off but some listeners allow it or use certificates", mutate: func(c *Config) {
			c.Auth.AllowAnonymous = new(false)
			local := tcpListener("local", "127.0.0.1:1883")
			local.AllowAnonymous = new(true)
			certs := tlsListener("certs", ":8883")
			certs.CAFile, certs.ClientAuth, certs.IdentityFrom = "ca.pem", "required", "cn"
			c.Listeners = []Listener{local, certs}
		}},
		{name: "anonymous off with a password file", mutate: func(c *Config) {
			c.Auth.PasswordFile, c.Listeners[0].AllowAnonymous = "passwd", new(false)
		}},

		// Log.
		{name: "log levels", mutate: func(c *Config) { c.Log.Level = "debug" }},
		{name: "log level warn", mutate: func(c *Config) { c.Log.Level = "warn" }},
		{name: "log level error", mutate: func(c *Config) { c.Log.Level = "error" }},
		{name: "log level unknown", mutate: func(c *Config) { c.Log.Level = "verbose" },
			want: []FieldError{{"log.level", `must be one of "debug", "info", "warn", "error", got "verbose"`}}},
		{name: "log level is case-sensitive", mutate: func(c *Config) { c.Log.Level = "INFO" },
			want: []FieldError{{"log.level", `must be one of "debug", "info", "warn", "error", got "INFO"`}}},
		{name: "log format json", mutate: func(c *Config) { c.Log.Format = "json" }},
		{name: "log format unknown", mutate: func(c *Config) { c.Log.Format = "logfmt" },
			want: []FieldError{{"log.format", `must be one of "text", "json", got "logfmt"`}}},

		// Server.
		{name: "shutdown_timeout short", mutate: func(c *Config) { c.Server.ShutdownTimeout = 1 }},
		{name: "shutdown_timeout zero", mutate: func(c *Config) { c.Server.ShutdownTimeout = 0 },
			want: []FieldError{{"server.shutdown_timeout", "must be greater than 0s, got 0s"}}},
		{name: "shutdown_timeout negative", mutate: func(c *Config) { c.Server.ShutdownTimeout = Duration(-time.Second) },
			want: []FieldError{{"server.shutdown_timeout", "must be greater than 0s, got -1s"}}},
		{name: "workers maximum", mutate: func(c *Config) { c.Server.Workers = 256 }},
		{name: "workers too many", mutate: func(c *Config) { c.Server.Workers = 257 },
			want: []FieldError{{"server.workers", "must be between 0 and 256, got 257"}}},
		{name: "workers negative", mutate: func(c *Config) { c.Server.Workers = -1 },
			want: []FieldError{{"server.workers", "must be between 0 and 256, got -1"}}},

		// Several problems come back together, in field order.
		{name: "all problems at once", mutate: func(c *Config) {
			c.Listeners[0].Address = "nope"
			c.Limits.MaxPacketSize = 0
			c.KeepAlive.Max = 70000
			c.Log.Format = "xml"
			c.Server.Workers = 1000
		}, want: []FieldError{
			{"listener[0].address", `must be host:port, got "nope"`},
			{"limits.max_packet_size", "must be between 16 and 268435460, got 0"},
			{"keepalive.max", "must be between 0 and 65535, got 70000"},
			{"log.format", `must be one of "text", "json", got "xml"`},
			{"server.workers", "must be between 0 and 256, got 1000"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			before := c
			before.Listeners = append([]Listener(nil), c.Listeners...)

			var got []FieldError
			for _, fe := range fieldErrors(t, c.Validate()) {
				got = append(got, *fe)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Validate() errors\n got %q\nwant %q", got, tt.want)
			}
			// Compared as text because NaN, which one case validates, is
			// never DeepEqual to itself.
			if got, want := fmt.Sprintf("%+v", c), fmt.Sprintf("%+v", before); got != want {
				t.Fatalf("Validate() changed the config: got %s, want %s", got, want)
			}
		})
	}
}
