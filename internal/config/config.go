package config

import (
	"fmt"
	"time"
)

// Defaults and bounds. They are the single source for Default and Validate;
// tests keep docs/configuration.md and iotd.example.toml equal to them.
const (
	// defaultListenerAddress is every IPv4 interface, on the IANA-registered
	// MQTT port.
	defaultListenerAddress = "0.0.0.0:1883"
	defaultListenerType    = "tcp"

	defaultMaxPacketSize   = 1 << 20
	defaultConnectTimeout  = Duration(10 * time.Second)
	defaultMaxPendingBytes = 1 << 20
	defaultRetainedMax     = 100000
	defaultMaxQueued       = 1000
	defaultMaxInflight     = 64
	defaultRetryMax        = Duration(time.Minute)
	defaultSessionExpiry   = Duration(2 * time.Hour)
	defaultShutdownTimeout = Duration(10 * time.Second)
	defaultLogLevel        = "info"
	defaultLogFormat       = "text"

	defaultClientAuth    = "none"
	defaultMinTLSVersion = "1.2"

	defaultAuthFailDelay    = Duration(time.Second)
	defaultAuthFailMaxDelay = Duration(30 * time.Second)

	defaultStoreBackend       = "file"
	defaultStoreDir           = "iotd-data"
	defaultStoreFsync         = "always"
	defaultStoreFsyncInterval = Duration(10 * time.Millisecond)
	defaultStoreOnCorrupt     = "fail"

	defaultAuthCacheTTL           = Duration(5 * time.Minute)
	defaultAuthDisconnectOnRevoke = true

	// minPacketSize is small enough for any real CONNECT to fit, yet rules
	// out values that are surely a unit mistake.
	minPacketSize = 16
	// maxPacketSize is the largest packet MQTT can express: a Remaining
	// Length of 268,435,455 (the four-byte variable byte integer of MQTT
	// 3.1.1 section 2.2.3) plus a five-byte fixed header.
	maxPacketSize = 268435460
	// minPendingBytes lets a few packets always be queued to a subscriber.
	minPendingBytes = 4096
	maxWorkers      = 256
	// maxKeepAlive is the largest Keep Alive a CONNECT packet can carry: a
	// two-byte field, in seconds (MQTT 3.1.1 section 3.1.2.10).
	maxKeepAlive = 65535

	minConnectTimeout = Duration(100 * time.Millisecond)
	maxConnectTimeout = Duration(10 * time.Minute)

	// The fsync period is at least a millisecond, below which it would
	// cost as much as fsync = "always", and at most ten seconds, beyond
	// which acknowledgements would wait long enough for clients to
	// retransmit.
	minFsyncInterval = Duration(time.Millisecond)
	maxFsyncInterval = Duration(10 * time.Second)
)

// Duration is a time.Duration written in TOML as a string such as "10s" or
// "1m30s", in the syntax of time.ParseDuration, so that a file never has to
// spell out nanoseconds.
type Duration time.Duration

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// String returns d in the form time.Duration prints, for example "1m30s".
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText implements encoding.TextMarshaler, writing d as a duration
// string such as "10s".
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler. It accepts any string
// time.ParseDuration accepts.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("must be a duration such as \"10s\" or \"1m30s\", got %q", text)
	}
	*d = Duration(v)
	return nil
}

// Config is the whole IoTD configuration. Every key of the TOML file maps to
// one field; see docs/configuration.md for the reference.
type Config struct {
	// Listeners are the [[listener]] tables. A file that has at least one
	// replaces the default listener list instead of adding to it, so the
	// default port is never opened by surprise.
	Listeners []Listener `toml:"listener"`
	// Limits bounds what one client or one packet may cost the broker.
	Limits Limits `toml:"limits"`
	// KeepAlive is the policy on the Keep Alive clients ask for.
	KeepAlive KeepAlive `toml:"keepalive"`
	// Retained bounds the retained message store.
	Retained Retained `toml:"retained"`
	// Session bounds the state kept for each client session.
	Session Session `toml:"session"`
	// Store selects where sessions, retained messages and inflight
	// messages are kept, and how durably.
	Store Store `toml:"store"`
	// Auth selects how clients are authenticated and authorized.
	Auth Auth `toml:"auth"`
	// Log selects the log level and format.
	Log Log `toml:"log"`
	// Server holds process-wide settings.
	Server Server `toml:"server"`
}

// Listener is one socket the broker accepts MQTT connections on.
//
// The TLS keys (CertFile to MinTLSVersion) apply only to Type "tls"; on a
// "tcp" listener they must keep their defaults, so that a certificate
// configured on the wrong listener is reported instead of ignored. In a
// Listener built in code rather than parsed, an empty ClientAuth or
// MinTLSVersion means its default.
type Listener struct {
	// Name identifies the listener in logs. It defaults to "<type>-<index>"
	// (for example "tcp-0" or "tls-1") and must be unique.
	Name string `toml:"name"`
	// Type is the transport: "tcp" (plain MQTT) or "tls" (MQTT over TLS);
	// "unix" and "websocket" come later. It defaults to "tcp".
	Type string `toml:"type"`
	// Address is the host:port to listen on. It is required in a
	// [[listener]] table; the default listener uses "0.0.0.0:1883". Port 0
	// asks the system for a free port.
	Address string `toml:"address"`
	// CertFile is the PEM file with the server certificate chain, leaf
	// first. Required for "tls".
	CertFile string `toml:"cert_file"`
	// KeyFile is the PEM file with the private key of CertFile's leaf.
	// Required for "tls".
	KeyFile string `toml:"key_file"`
	// CAFile is the PEM bundle of CAs that client certificates must chain
	// to. Required when ClientAuth is "optional" or "required", and refused
	// when it is "none", where it would silently verify nothing.
	CAFile string `toml:"ca_file"`
	// ClientAuth says whether clients present a certificate: "none" (the
	// default: none is asked for), "optional" (verified against CAFile if
	// given) or "required" (the handshake fails without a valid one).
	ClientAuth string `toml:"client_auth"`
	// IdentityFrom makes the verified client certificate the client's
	// identity: its subject common name ("cn") or its first DNS, e-mail or
	// URI subject alternative name ("san-dns", "san-email", "san-uri")
	// becomes the username that authorization sees. "" (the default) does
	// not use the certificate as an identity. Needs ClientAuth other than
	// "none".
	IdentityFrom string `toml:"identity_from"`
	// MinTLSVersion is the lowest TLS version accepted: "1.2" (the default)
	// or "1.3".
	MinTLSVersion string `toml:"min_tls_version"`
	// AllowAnonymous overrides Auth.AllowAnonymous on this listener when it
	// is set; nil (the default) follows it. See Config.AnonymousAllowed.
	AllowAnonymous *bool `toml:"allow_anonymous"`
}

// Limits bounds the resources one connection or one packet can take.
type Limits struct {
	// MaxPacketSize is the largest whole MQTT packet (fixed header included),
	// in bytes, that the broker accepts. Default 1048576; 16..268435460.
	MaxPacketSize int `toml:"max_packet_size"`
	// MaxConnections caps simultaneous client connections; 0 means no limit
	// other than the process's file descriptor limit. Default 0; >= 0.
	MaxConnections int `toml:"max_connections"`
	// ConnectTimeout is how long a new connection may take, from accept, to
	// send its CONNECT packet before it is closed (MQTT 3.1.1 section 3.1.4
	// asks the server to close connections that stay silent for "a
	// reasonable amount of time"). Default "10s"; 100ms..10m.
	ConnectTimeout Duration `toml:"connect_timeout"`
	// MaxPendingBytes is the number of outbound bytes per connection that may
	// wait to be written to the socket. Beyond it, QoS 0 messages to that
	// subscriber are dropped (and counted) so that one slow reader never
	// blocks a publisher. Default 1048576; >= 4096.
	MaxPendingBytes int `toml:"max_pending_bytes"`
	// ConnectionRate caps the new connections per second accepted from one
	// source IP address; connections beyond it are closed at accept. 0 (the
	// default) means no limit. A fraction such as 0.5 (one every two
	// seconds) is allowed; >= 0.
	ConnectionRate float64 `toml:"connection_rate"`
	// ConnectionBurst is how many connections one source IP may open at
	// once before ConnectionRate applies; 0 (the default) means the rate
	// rounded up, at least 1. >= 0.
	ConnectionBurst int `toml:"connection_burst"`
	// TotalConnectionRate caps the new connections per second accepted in
	// total, over every listener, so that a reconnect storm cannot starve
	// the clients already connected. 0 (the default) means no limit; >= 0.
	TotalConnectionRate float64 `toml:"total_connection_rate"`
	// TotalConnectionBurst is the burst of TotalConnectionRate; 0 (the
	// default) means the rate rounded up, at least 1. >= 0.
	TotalConnectionBurst int `toml:"total_connection_burst"`
	// AuthFailDelay is how long the broker waits before sending a refusal
	// (CONNACK 0x04 or 0x05) to a source IP whose previous login failed;
	// the delay doubles with each further consecutive failure, up to
	// AuthFailMaxDelay. The first failure is answered at once, a successful
	// login is never delayed and resets the count. It slows password
	// guessing without locking legitimate clients out. "0s" turns it off.
	// Default "1s"; >= 0.
	AuthFailDelay Duration `toml:"auth_fail_delay"`
	// AuthFailMaxDelay caps AuthFailDelay's doubling. Default "30s"; at
	// least AuthFailDelay.
	AuthFailMaxDelay Duration `toml:"auth_fail_max_delay"`
}

// KeepAlive is the broker's policy on the Keep Alive value in CONNECT.
type KeepAlive struct {
	// Max is the largest Keep Alive, in seconds, a client may ask for; 0 (the
	// default) means no limit. When Max > 0, a 3.1.1 client that asks for
	// more, or for 0 (which means "never time out"), gets CONNACK return code
	// 0x02 (identifier rejected), as Mosquitto does: MQTT 3.1.1 cannot tell
	// the client to use another value, and the server enforces whatever it
	// accepted [MQTT-3.1.2-24]. 0..65535.
	Max int `toml:"max"`
}

// Retained bounds the retained message store.
type Retained struct {
	// MaxMessages caps the number of retained topics; 0 means no limit.
	// Default 100000; >= 0. Once full, a retained PUBLISH on a new topic is
	// not stored (it is logged and counted): a deliberate resource bound on
	// [MQTT-3.3.1-5]. Replacing or deleting the message of an existing topic
	// always works.
	MaxMessages int `toml:"max_messages"`
	// MaxPayloadSize is the largest payload, in bytes, that is stored as a
	// retained message; 0 means any payload that fits in max_packet_size.
	// Default 0; >= 0.
	MaxPayloadSize int `toml:"max_payload_size"`
}

// Session bounds the state kept for each client session.
type Session struct {
	// MaxInflightMessages is the inflight window: QoS 1 and 2 messages sent
	// to one client and not yet acknowledged. Further messages wait in the
	// session's queue, in order. Default 64; 1..65535.
	MaxInflightMessages int `toml:"max_inflight_messages"`
	// MaxQueuedMessages caps the messages kept for one session while its
	// client is offline (CleanSession=0, [MQTT-3.1.2-5]) or its inflight
	// window is full; they are sent, in order, when it can take them. Once
	// full, new messages for that session are dropped (the newest is
	// refused), logged and counted. 0 keeps none. Default 1000; >= 0.
	MaxQueuedMessages int `toml:"max_queued_messages"`
	// MaxQueuedBytes caps the topic and payload bytes of one session's queue;
	// 0 means only max_queued_messages bounds it. Default 0; >= 0.
	MaxQueuedBytes int `toml:"max_queued_bytes"`
	// QueueQoS0 also queues QoS 0 messages for offline persistent sessions.
	// Default false.
	QueueQoS0 bool `toml:"queue_qos0"`
	// RetryInterval re-sends an unacknowledged QoS 1/2 message, with DUP set,
	// to a connected client after this long, doubling for each further retry
	// up to RetryMaxInterval. "0s" (the default) re-sends only when the
	// client reconnects, which is what MQTT 3.1.1 requires [MQTT-4.4.0-1].
	// >= 0.
	RetryInterval Duration `toml:"retry_interval"`
	// RetryMaxInterval caps the retry backoff. Default "1m"; > 0.
	RetryMaxInterval Duration `toml:"retry_max_interval"`
	// Expiry removes a persistent session whose client has been offline this
	// long, with its subscriptions and queued messages. "0s" means never.
	// Default "2h"; >= 0.
	Expiry Duration `toml:"expiry"`
}

// Store selects the persistence backend and its durability. The broker
// keeps sessions, subscriptions, queued and inflight messages and retained
// messages there, so that they survive a restart.
type Store struct {
	// Backend is "file" (the default: an embedded Pebble key-value engine),
	// "sqlite" (one SQLite database) or "memory" (nothing survives a
	// restart).
	Backend string `toml:"backend"`
	// Dir is the data directory, created if missing; a relative path is
	// relative to the working directory. The file backend keeps its files
	// in <Dir>/pebble, sqlite in <Dir>/sqlite/iotd.db. Default "iotd-data";
	// required unless Backend is "memory", which ignores it.
	Dir string `toml:"dir"`
	// Fsync says when writes are forced to disk, and so when a message
	// counts as stored: "always" (the default: each group commit is
	// fsynced), "interval" (an fsync every FsyncInterval) or "never" (the
	// operating system decides). Acknowledgements (CONNACK, SUBACK,
	// UNSUBACK, PUBACK, PUBREC, PUBCOMP), PUBREL and QoS 2 deliveries are sent
	// only once the state they depend on is stored: after the fsync of its
	// group commit, after the next periodic fsync, or with "never" once its
	// group is committed without an fsync, where a crash of the machine may
	// lose acknowledged messages.
	Fsync string `toml:"fsync"`
	// FsyncInterval is the period of Fsync "interval". Default "10ms";
	// 1ms..10s.
	FsyncInterval Duration `toml:"fsync_interval"`
	// OnCorrupt is what happens when the store cannot be read at startup:
	// "fail" (the default) refuses to start and says which file is at fault
	// and why; "move-aside" renames the store to <path>.corrupt-<time>,
	// logs that at error level, and starts with an empty one.
	OnCorrupt string `toml:"on_corrupt"`
}

// Auth selects how clients prove who they are and what they may do.
type Auth struct {
	// PasswordFile is a user file in Mosquitto's mosquitto_passwd format:
	// one "username:hash" line per user, with "$7$" (PBKDF2-SHA512) or "$6$"
	// (salted SHA-512) hashes. "" (the default) means no users.
	PasswordFile string `toml:"password_file"`
	// ACLFile is an access control file in Mosquitto's acl_file syntax. ""
	// (the default) lets every client publish and subscribe to every topic.
	ACLFile string `toml:"acl_file"`
	// AllowAnonymous says whether clients that send no username may
	// connect. nil (the default) means "not set": anonymous access is then
	// on unless PasswordFile is set, so that adding users closes the broker
	// to strangers without a second key. See Config.AnonymousAllowed.
	AllowAnonymous *bool `toml:"allow_anonymous"`
	// CacheTTL is how long a successful login and an ACL decision are
	// remembered, sparing a password hash per reconnect. "0s" turns the
	// caches off. Default "5m"; >= 0.
	CacheTTL Duration `toml:"cache_ttl"`
	// DisconnectOnRevoke makes a reload of the auth files (SIGHUP)
	// disconnect the clients whose user is no longer in PasswordFile.
	// Default true.
	DisconnectOnRevoke bool `toml:"disconnect_on_revoke"`
}

// AnonymousAllowed reports whether clients without a username may connect
// on listener l: l.AllowAnonymous if it is set, else Auth.AllowAnonymous if
// it is set, else whether Auth.PasswordFile is empty. The last rule is the
// secure default: a broker with users refuses anonymous clients unless the
// file says otherwise.
func (c *Config) AnonymousAllowed(l Listener) bool {
	if l.AllowAnonymous != nil {
		return *l.AllowAnonymous
	}
	if c.Auth.AllowAnonymous != nil {
		return *c.Auth.AllowAnonymous
	}
	return c.Auth.PasswordFile == ""
}

// Log selects what is logged and how.
type Log struct {
	// Level is the minimum level logged: "debug", "info", "warn" or "error".
	// Default "info".
	Level string `toml:"level"`
	// Format is "text" (log/slog text handler) or "json". Default "text".
	Format string `toml:"format"`
}

// Server holds process-wide settings.
type Server struct {
	// ShutdownTimeout is the upper bound on the time a graceful shutdown
	// (SIGINT) takes. Default "10s"; > 0.
	ShutdownTimeout Duration `toml:"shutdown_timeout"`
	// Workers is the number of event-loop goroutines that poll sockets; 0
	// (the default) means GOMAXPROCS. 0..256.
	Workers int `toml:"workers"`
}

// Default returns the configuration IoTD runs with when no file is given:
// one listener "tcp-0" on 0.0.0.0:1883 and every default documented on the
// fields. Each call returns a new value, so callers may modify it freely.
func Default() Config {
	return Config{
		Listeners: []Listener{defaultListener(0)},
		Limits: Limits{
			MaxPacketSize:    defaultMaxPacketSize,
			MaxConnections:   0,
			ConnectTimeout:   defaultConnectTimeout,
			MaxPendingBytes:  defaultMaxPendingBytes,
			AuthFailDelay:    defaultAuthFailDelay,
			AuthFailMaxDelay: defaultAuthFailMaxDelay,
		},
		KeepAlive: KeepAlive{Max: 0},
		Retained: Retained{
			MaxMessages:    defaultRetainedMax,
			MaxPayloadSize: 0,
		},
		Session: Session{
			MaxInflightMessages: defaultMaxInflight,
			MaxQueuedMessages:   defaultMaxQueued,
			RetryMaxInterval:    defaultRetryMax,
			Expiry:              defaultSessionExpiry,
		},
		Store: Store{
			Backend:       defaultStoreBackend,
			Dir:           defaultStoreDir,
			Fsync:         defaultStoreFsync,
			FsyncInterval: defaultStoreFsyncInterval,
			OnCorrupt:     defaultStoreOnCorrupt,
		},
		Auth: Auth{
			CacheTTL:           defaultAuthCacheTTL,
			DisconnectOnRevoke: defaultAuthDisconnectOnRevoke,
		},
		Log: Log{Level: defaultLogLevel, Format: defaultLogFormat},
		Server: Server{
			ShutdownTimeout: defaultShutdownTimeout,
			Workers:         0,
		},
	}
}

// defaultListener is the listener Default puts at index i.
func defaultListener(i int) Listener {
	return Listener{
		Name:          defaultListenerName(defaultListenerType, i),
		Type:          defaultListenerType,
		Address:       defaultListenerAddress,
		ClientAuth:    defaultClientAuth,
		MinTLSVersion: defaultMinTLSVersion,
	}
}

// defaultListenerName is the name of the i-th listener when the file gives
// none. It includes the type so that names stay readable once other
// transports exist.
func defaultListenerName(typ string, i int) string {
	return fmt.Sprintf("%s-%d", typ, i)
}
