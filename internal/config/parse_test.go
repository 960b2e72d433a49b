package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		// want changes Default into the expected result.
		want func(c *Config)
	}{
		{name: "empty document", doc: "", want: func(*Config) {}},
		{name: "comments only", doc: "# nothing here\n\n", want: func(*Config) {}},
		{name: "empty tables", doc: "[limits]\n[keepalive]\n[retained]\n[store]\n[auth]\n[log]\n[server]\n", want: func(*Config) {}},

		{name: "one listener with address only", doc: "[[listener]]\naddress = \"127.0.0.1:1884\"\n",
			want: func(c *Config) {
				c.Listeners = []Listener{tcpListener("tcp-0", "127.0.0.1:1884")}
			}},
		{name: "listeners replace the default list", doc: `
[[listener]]
address = ":1883"

[[listener]]
name = "local"
type = "tcp"
address = "127.0.0.1:1884"

[[listener]]
address = "[::1]:1885"
`, want: func(c *Config) {
			c.Listeners = []Listener{
				tcpListener("tcp-0", ":1883"),
				tcpListener("local", "127.0.0.1:1884"),
				tcpListener("tcp-2", "[::1]:1885"),
			}
		}},
		{name: "inline array of listeners", doc: `listener = [{address = ":1"}, {name = "b", address = ":2"}]`,
			want: func(c *Config) {
				c.Listeners = []Listener{tcpListener("tcp-0", ":1"), tcpListener("b", ":2")}
			}},

		{name: "tls listeners", doc: `
[[listener]]
address = ":1883"
allow_anonymous = true

[[listener]]
type = "tls"
address = ":8883"
cert_file = "server.crt"
key_file = "server.key"

[[listener]]
name = "devices"
type = "tls"
address = ":8884"
cert_file = "server.crt"
key_file = "server.key"
ca_file = "ca.crt"
client_auth = "required"
identity_from = "san-uri"
min_tls_version = "1.3"
allow_anonymous = false
`, want: func(c *Config) {
			plain := tcpListener("tcp-0", ":1883")
			plain.AllowAnonymous = new(true)
			c.Listeners = []Listener{
				plain,
				{Name: "tls-1", Type: "tls", Address: ":8883", CertFile: "server.crt", KeyFile: "server.key",
					ClientAuth: "none", MinTLSVersion: "1.2"},
				{Name: "devices", Type: "tls", Address: ":8884", CertFile: "server.crt", KeyFile: "server.key",
					CAFile: "ca.crt", ClientAuth: "required", IdentityFrom: "san-uri", MinTLSVersion: "1.3",
					AllowAnonymous: new(false)},
			}
		}},
		{name: "connection limits", doc: "[limits]\nconnection_rate = 0.5\nconnection_burst = 4\ntotal_connection_rate = 200\ntotal_connection_burst = 400\nauth_fail_delay = \"0s\"\nauth_fail_max_delay = \"0s\"\n",
			want: func(c *Config) {
				c.Limits.ConnectionRate, c.Limits.ConnectionBurst = 0.5, 4
				c.Limits.TotalConnectionRate, c.Limits.TotalConnectionBurst = 200, 400
				c.Limits.AuthFailDelay, c.Limits.AuthFailMaxDelay = 0, 0
			}},
		{name: "rate as float with exponent", doc: "[limits]\ntotal_connection_rate = 1.5e3\n",
			want: func(c *Config) { c.Limits.TotalConnectionRate = 1500 }},
		{name: "store", doc: "[store]\nbackend = \"sqlite\"\ndir = \"/var/lib/iotd\"\nfsync = \"interval\"\nfsync_interval = \"50ms\"\non_corrupt = \"move-aside\"\n",
			want: func(c *Config) {
				c.Store = Store{Backend: "sqlite", Dir: "/var/lib/iotd", Fsync: "interval",
					FsyncInterval: Duration(50 * time.Millisecond), OnCorrupt: "move-aside"}
			}},
		{name: "memory store", doc: "[store]\nbackend = \"memory\"\ndir = \"\"\n",
			want: func(c *Config) { c.Store.Backend, c.Store.Dir = "memory", "" }},
		{name: "auth", doc: "[auth]\npassword_file = \"passwd\"\nacl_file = \"acl\"\nallow_anonymous = true\ncache_ttl = \"0s\"\ndisconnect_on_revoke = false\n",
			want: func(c *Config) {
				c.Auth = Auth{PasswordFile: "passwd", ACLFile: "acl", AllowAnonymous: new(true)}
			}},
		{name: "auth password file leaves allow_anonymous unset", doc: "[auth]\npassword_file = \"passwd\"\n",
			want: func(c *Config) { c.Auth.PasswordFile = "passwd" }},
		{name: "limits.max_packet_size", doc: "[limits]\nmax_packet_size = 268_435_460\n",
			want: func(c *Config) { c.Limits.MaxPacketSize = 268435460 }},
		{name: "limits.max_packet_size in hex", doc: "[limits]\nmax_packet_size = 0x100\n",
			want: func(c *Config) { c.Limits.MaxPacketSize = 256 }},
		{name: "limits.max_connections", doc: "[limits]\nmax_connections = 50000\n",
			want: func(c *Config) { c.Limits.MaxConnections = 50000 }},
		{name: "limits.connect_timeout", doc: "[limits]\nconnect_timeout = \"1m30s\"\n",
			want: func(c *Config) { c.Limits.ConnectTimeout = Duration(90 * time.Second) }},
		{name: "limits.max_pending_bytes", doc: "[limits]\nmax_pending_bytes = 4096\n",
			want: func(c *Config) { c.Limits.MaxPendingBytes = 4096 }},
		{name: "keepalive.max", doc: "[keepalive]\nmax = 600\n",
			want: func(c *Config) { c.KeepAlive.Max = 600 }},
		{name: "session keys", doc: "[session]\nmax_inflight_messages = 10\nmax_queued_bytes = 4096\nqueue_qos0 = true\nretry_interval = \"5s\"\nretry_max_interval = \"30s\"\nexpiry = \"0s\"\n",
			want: func(c *Config) {
				c.Session.MaxInflightMessages, c.Session.MaxQueuedBytes, c.Session.QueueQoS0 = 10, 4096, true
				c.Session.RetryInterval, c.Session.RetryMaxInterval, c.Session.Expiry = Duration(5*time.Second), Duration(30*time.Second), 0
			}},
		{name: "retained.max_messages", doc: "[retained]\nmax_messages = 0\n",
			want: func(c *Config) { c.Retained.MaxMessages = 0 }},
		{name: "retained.max_payload_size", doc: "[retained]\nmax_payload_size = 65536\n",
			want: func(c *Config) { c.Retained.MaxPayloadSize = 65536 }},
		{name: "log.level", doc: "[log]\nlevel = \"debug\"\n",
			want: func(c *Config) { c.Log.Level = "debug" }},
		{name: "log.format", doc: "[log]\nformat = 'json'\n",
			want: func(c *Config) { c.Log.Format = "json" }},
		{name: "server.shutdown_timeout", doc: "[server]\nshutdown_timeout = \"500ms\"\n",
			want: func(c *Config) { c.Server.ShutdownTimeout = Duration(500 * time.Millisecond) }},
		{name: "server.workers", doc: "[server]\nworkers = 8\n",
			want: func(c *Config) { c.Server.Workers = 8 }},
		{name: "dotted keys", doc: "limits.max_connections = 7\nlog.level = \"warn\"\n",
			want: func(c *Config) { c.Limits.MaxConnections = 7; c.Log.Level = "warn" }},
		{name: "inline table", doc: "server = { workers = 2, shutdown_timeout = \"1s\" }\n",
			want: func(c *Config) { c.Server = Server{Workers: 2, ShutdownTimeout: Duration(time.Second)} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.doc))
			if err != nil {
				t.Fatalf("Parse() error = %v", err)
			}
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Parse() =\n %+v\nwant\n %+v", got, want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		// want is the whole error text: one line per problem.
		want string
	}{
		// Unknown keys, at every level.
		{name: "unknown top-level key", doc: "verbose = true\n",
			want: "verbose: unknown key (line 1)"},
		{name: "unknown top-level table", doc: "[tls]\ncert = \"x\"\n",
			want: "tls: unknown key (line 1)"},
		{name: "unknown key in auth", doc: "[auth]\npasswords = \"x\"\n",
			want: "auth.passwords: unknown key (line 2)"},
		{name: "unknown implied table", doc: "[foo.bar]\nx = 1\n",
			want: "foo: unknown key"},
		{name: "unknown key in a section", doc: "[limits]\nmax_packet_size = 100\nmax_packets = 5\n",
			want: "limits.max_packets: unknown key (line 3)"},
		{name: "unknown subtable in a section", doc: "[limits.extra]\nx = 1\n",
			want: "limits.extra: unknown key (line 1)"},
		{name: "unknown dotted key", doc: "log.colour = true\n",
			want: "log.colour: unknown key (line 1)"},
		{name: "keys are case-sensitive", doc: "[Limits]\nMax_Packet_Size = 5\n",
			want: "Limits: unknown key (line 1)"},
		{name: "unknown key in a listener", doc: "[[listener]]\naddress = \":1883\"\nport = 1883\n",
			want: "listener[0].port: unknown key (line 3)"},
		{name: "misspelt key in the second listener", doc: "[[listener]]\naddress = \":1\"\n[[listener]]\nadress = \":2\"\n",
			want: "listener[1].adress: unknown key (line 4)\n" +
				`listener[1].address: is required (host:port, for example "0.0.0.0:1883")`},

		// Wrong TOML types.
		{name: "string for integer", doc: "[limits]\nmax_packet_size = \"1MB\"\n",
			want: `limits.max_packet_size: must be an integer, got string "1MB" (line 2)`},
		{name: "float for integer", doc: "[keepalive]\nmax = 1.5\n",
			want: "keepalive.max: must be an integer, got float 1.5 (line 2)"},
		{name: "boolean for integer", doc: "[server]\nworkers = true\n",
			want: "server.workers: must be an integer, got boolean true (line 2)"},
		{name: "string for boolean", doc: "[session]\nqueue_qos0 = \"yes\"\n",
			want: "session.queue_qos0: must be a boolean (true or false), got string \"yes\" (line 2)"},
		{name: "date for integer", doc: "[retained]\nmax_messages = 1979-05-27\n",
			want: "retained.max_messages: must be an integer, got date/time (line 2)"},
		{name: "array for integer", doc: "[retained]\nmax_payload_size = [1, 2]\n",
			want: "retained.max_payload_size: must be an integer, got array (line 2)"},
		{name: "integer for string", doc: "[log]\nlevel = 3\n",
			want: "log.level: must be a string, got integer 3 (line 2)"},
		{name: "table for string", doc: "[log]\nformat = { kind = \"json\" }\n",
			want: "log.format: must be a string, got table (line 2)"},
		{name: "string for rate", doc: "[limits]\nconnection_rate = \"10/s\"\n",
			want: `limits.connection_rate: must be a number, got string "10/s" (line 2)`},
		{name: "float for burst", doc: "[limits]\nconnection_burst = 2.5\n",
			want: "limits.connection_burst: must be an integer, got float 2.5 (line 2)"},
		{name: "infinite rate", doc: "[limits]\nconnection_rate = inf\n",
			want: "limits.connection_rate: must be a number of connections per second, 0 (no limit) or more, got +Inf"},
		{name: "NaN rate", doc: "[limits]\ntotal_connection_rate = nan\n",
			want: "limits.total_connection_rate: must be a number of connections per second, 0 (no limit) or more, got NaN"},
		{name: "string for optional boolean", doc: "[auth]\nallow_anonymous = \"no\"\n",
			want: `auth.allow_anonymous: must be a boolean (true or false), got string "no" (line 2)`},
		{name: "integer for listener optional boolean", doc: "[[listener]]\naddress = \":1\"\nallow_anonymous = 0\n",
			want: "listener[0].allow_anonymous: must be a boolean (true or false), got integer 0 (line 3)"},
		{name: "integer for duration", doc: "[limits]\nconnect_timeout = 10\n",
			want: `limits.connect_timeout: must be a duration string such as "10s" or "1m30s", got integer 10 (line 2)`},
		{name: "bad duration string", doc: "[server]\nshutdown_timeout = \"10 seconds\"\n",
			want: `server.shutdown_timeout: must be a duration such as "10s" or "1m30s", got "10 seconds" (line 2)`},
		{name: "duration without unit", doc: "[limits]\n\nconnect_timeout = \"10\"\n",
			want: `limits.connect_timeout: must be a duration such as "10s" or "1m30s", got "10" (line 3)`},
		{name: "scalar for a section", doc: "limits = 5\n",
			want: "limits: must be a table ([limits]), got integer 5 (line 1)"},
		{name: "array for a section", doc: "log = [\"info\"]\n",
			want: "log: must be a table ([log]), got array (line 1)"},
		{name: "table for the listener list", doc: "[listener]\naddress = \":1883\"\n",
			want: "listener: must be an array of tables ([[listener]]), got table (line 1)"},
		{name: "array of strings for the listener list", doc: "listener = [\":1883\"]\n",
			want: "listener: must be an array of tables ([[listener]]), got array (line 1)"},
		{name: "integer for listener address", doc: "[[listener]]\naddress = 1883\n",
			want: "listener[0].address: must be a string, got integer 1883 (line 2)"},
		{name: "wrong type in one of several listeners has no line", doc: "[[listener]]\naddress = \":1\"\n[[listener]]\naddress = 2\n",
			want: "listener[1].address: must be a string, got integer 2"},
		{name: "wrong listener type value keeps the default name valid", doc: "[[listener]]\ntype = 4\naddress = \":1\"\n",
			want: "listener[0].type: must be a string, got integer 4 (line 2)"},

		// Values of the right type, out of range.
		{name: "out of range", doc: "[limits]\nmax_packet_size = 3\n",
			want: "limits.max_packet_size: must be between 16 and 268435460, got 3"},
		{name: "no listeners", doc: "listener = []\n",
			want: "listener: at least one listener is required"},
		{name: "listener without address", doc: "[[listener]]\nname = \"x\"\n",
			want: `listener[0].address: is required (host:port, for example "0.0.0.0:1883")`},
		{name: "unknown listener type", doc: "[[listener]]\ntype = \"udp\"\naddress = \":1\"\n",
			want: `listener[0].type: must be one of "tcp", "tls", got "udp"`},
		{name: "tls listener without certificate", doc: "[[listener]]\ntype = \"tls\"\naddress = \":8883\"\n",
			want: "listener[0].cert_file: is required for a tls listener (PEM certificate chain)\n" +
				"listener[0].key_file: is required for a tls listener (PEM private key)"},
		{name: "tls keys on a tcp listener", doc: "[[listener]]\naddress = \":1883\"\ncert_file = \"c.pem\"\nclient_auth = \"none\"\nmin_tls_version = \"1.3\"\n",
			want: "listener[0].cert_file: only applies to type \"tls\", not \"tcp\"\n" +
				"listener[0].min_tls_version: only applies to type \"tls\", not \"tcp\""},
		{name: "anonymous off without users", doc: "[auth]\nallow_anonymous = false\n",
			want: `auth.allow_anonymous: is false but auth.password_file is empty, so no client can log in on listener "tcp-0" (set identity_from to use client certificates)`},
		{name: "store dir missing", doc: "[store]\ndir = \"\"\n",
			want: `store.dir: must not be empty (it is only optional with backend "memory")`},
		{name: "duplicate default names", doc: "[[listener]]\naddress = \":1\"\n[[listener]]\nname = \"tcp-0\"\naddress = \":2\"\n",
			want: `listener[1].name: duplicate name "tcp-0", also used by listener[0]`},
		{name: "duplicate addresses", doc: "listener = [{address = \":1883\"}, {address = \":1883\"}]\n",
			want: `listener[1].address: duplicate address ":1883", also used by listener[0]`},

		// Everything at once: every problem is reported with its path,
		// decoding problems first, in file order, then range problems.
		{name: "several problems together", doc: `
[limits]
max_packet_size = "big"
max_connections = -1
connect_timeout = 5
bogus = 1

[log]
level = "loud"

[[listener]]
address = "nowhere"
extra = true
`, want: `limits.max_packet_size: must be an integer, got string "big" (line 3)
limits.connect_timeout: must be a duration string such as "10s" or "1m30s", got integer 5 (line 5)
limits.bogus: unknown key (line 6)
listener[0].extra: unknown key (line 13)
listener[0].address: must be host:port, got "nowhere"
limits.max_connections: must be 0 or more, got -1
log.level: must be one of "debug", "info", "warn", "error", got "loud"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse() error = nil, want %q", tt.want)
			}
			if err.Error() != tt.want {
				t.Fatalf("Parse() error\n got %q\nwant %q", err.Error(), tt.want)
			}
			// Every problem must be a *FieldError so callers can read the path.
			if n, want := len(fieldErrors(t, err)), strings.Count(tt.want, "\n")+1; n != want {
				t.Fatalf("Parse() joined %d errors, want %d", n, want)
			}
			if !reflect.DeepEqual(got, Config{}) {
				t.Fatalf("Parse() config on error = %+v, want the zero Config", got)
			}
		})
	}
}

func TestParseSyntaxErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string // prefix of the error text
	}{
		{name: "unterminated table header", doc: "[limits\nmax_connections = 1\n", want: "invalid TOML at line 1, column 8: "},
		{name: "missing value", doc: "[limits]\nmax_connections =\n", want: "invalid TOML at line 2,"},
		{name: "duplicate key", doc: "[log]\nlevel = \"info\"\nlevel = \"debug\"\n", want: `invalid TOML at line 3, column 1 (after key "log.level"): `},
		{name: "duplicate table", doc: "[log]\n[log]\n", want: "invalid TOML at line 2,"},
		{name: "unterminated string", doc: "[log]\nlevel = \"info\n", want: "invalid TOML at line 2,"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("Parse() error = %v, want prefix %q", err, tt.want)
			}
			var fe *FieldError
			if errors.As(err, &fe) {
				t.Fatalf("syntax error %v unwraps to a *FieldError; want a plain error", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.toml", "[server]\nworkers = 4\n")
	bad := write("bad.toml", "[server]\nworkers = 1000\n[log]\nlevel = 1\n")
	broken := write("broken.toml", "[server\n")
	missing := filepath.Join(dir, "missing.toml")

	t.Run("good file", func(t *testing.T) {
		got, err := Load(good)
		if err != nil {
			t.Fatalf("Load() error = %v", err)
		}
		want := Default()
		want.Server.Workers = 4
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Load() = %+v, want %+v", got, want)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(missing)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Load() error = %v, want one that is fs.ErrNotExist", err)
		}
		if !strings.Contains(err.Error(), missing) {
			t.Fatalf("Load() error = %q, want it to name %s", err, missing)
		}
	})
	t.Run("every problem names the file", func(t *testing.T) {
		_, err := Load(bad)
		want := bad + ": log.level: must be a string, got integer 1 (line 4)\n" +
			bad + ": server.workers: must be between 0 and 256, got 1000"
		if err == nil || err.Error() != want {
			t.Fatalf("Load() error\n got %v\nwant %s", err, want)
		}
		if got := paths(fieldErrors(t, err)); !reflect.DeepEqual(got, []string{"log.level", "server.workers"}) {
			t.Fatalf("Load() error paths = %q, want log.level and server.workers", got)
		}
	})
	t.Run("syntax error names the file", func(t *testing.T) {
		_, err := Load(broken)
		if err == nil || !strings.HasPrefix(err.Error(), broken+": invalid TOML at line 1,") {
			t.Fatalf("Load() error = %v, want it to start with the file name", err)
		}
	})
}

// FuzzParse checks that no document makes Parse panic, and that whatever it
// accepts passes Validate.
func FuzzParse(f *testing.F) {
	seeds := []string{
		"",
		"[limits]\nmax_packet_size = 100\n",
		"[[listener]]\naddress = \":1\"\n[[listener]]\nname = \"x\"\n",
		"listener = [{address = \":1\"}, 5]\n",
		"limits = { connect_timeout = \"1s\", extra = [1, 2] }\n",
		"[server]\nshutdown_timeout = 1979-05-27T07:32:00Z\n",
		"a.b.c = 1\n[log]\nlevel = 'debug'\n",
	}
	if data, err := os.ReadFile(examplePath); err == nil {
		seeds = append(seeds, string(data))
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse accepted %q but Validate() = %v", data, err)
		}
	})
}
