package config

import (
	"reflect"
	"testing"
	"time"
)

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
			want: []FieldError{{"listener[0].type", `must be one of "tcp", got "udp"`}}},
		{name: "empty listener type", mutate: func(c *Config) { c.Listeners[0].Type = "" },
			want: []FieldError{{"listener[0].type", `must be one of "tcp", got ""`}}},
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
			if !reflect.DeepEqual(c, before) {
				t.Fatalf("Validate() changed the config: got %+v, want %+v", c, before)
			}
		})
	}
}
