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
	// Log selects the log level and format.
	Log Log `toml:"log"`
	// Server holds process-wide settings.
	Server Server `toml:"server"`
}

// Listener is one socket the broker accepts MQTT connections on.
type Listener struct {
	// Name identifies the listener in logs. It defaults to "<type>-<index>"
	// (for example "tcp-0") and must be unique.
	Name string `toml:"name"`
	// Type is the transport. Only "tcp" exists for now; "tls", "unix" and
	// "websocket" come later. It defaults to "tcp".
	Type string `toml:"type"`
	// Address is the host:port to listen on. It is required in a
	// [[listener]] table; the default listener uses "0.0.0.0:1883". Port 0
	// asks the system for a free port.
	Address string `toml:"address"`
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
			MaxPacketSize:   defaultMaxPacketSize,
			MaxConnections:  0,
			ConnectTimeout:  defaultConnectTimeout,
			MaxPendingBytes: defaultMaxPendingBytes,
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
		Name:    defaultListenerName(defaultListenerType, i),
		Type:    defaultListenerType,
		Address: defaultListenerAddress,
	}
}

// defaultListenerName is the name of the i-th listener when the file gives
// none. It includes the type so that names stay readable once other
// transports exist.
func defaultListenerName(typ string, i int) string {
	return fmt.Sprintf("%s-%d", typ, i)
}
