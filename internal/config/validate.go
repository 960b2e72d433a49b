package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// FieldError is one problem with one configuration key.
type FieldError struct {
	// Path is the key the problem is about, in TOML dotted form with list
	// indices in brackets: "limits.max_packet_size", "listener[1].address".
	// It is "listener" for problems with the list as a whole.
	Path string
	// Msg says what is wrong and, where it helps, what was found; for
	// problems found while decoding a file it ends with the line when known.
	Msg string
}

// Error returns the path and the message, for example
// "limits.max_packet_size: must be between 16 and 268435460, got 3".
func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

// listenerTypes are the transports Listener.Type may name. It grows as
// transports are added.
var listenerTypes = []string{"tcp"}

var (
	logLevels  = []string{"debug", "info", "warn", "error"}
	logFormats = []string{"text", "json"}
)

// Validate checks every field against its documented range and reports all
// problems at once: the result joins (errors.Join) one *FieldError per
// problem, in field order, or is nil. It does not change c; Parse fills the
// defaults before calling it.
func (c *Config) Validate() error {
	return errors.Join(c.validate()...)
}

// validate returns one *FieldError per problem, in field order.
func (c *Config) validate() []error {
	var v validator
	v.listeners(c.Listeners)

	l := c.Limits
	v.intRange("limits.max_packet_size", l.MaxPacketSize, minPacketSize, maxPacketSize)
	v.intMin("limits.max_connections", l.MaxConnections, 0)
	v.durationRange("limits.connect_timeout", l.ConnectTimeout, minConnectTimeout, maxConnectTimeout)
	v.intMin("limits.max_pending_bytes", l.MaxPendingBytes, minPendingBytes)

	v.intRange("keepalive.max", c.KeepAlive.Max, 0, maxKeepAlive)

	v.intMin("retained.max_messages", c.Retained.MaxMessages, 0)
	v.intMin("retained.max_payload_size", c.Retained.MaxPayloadSize, 0)
	v.intRange("session.max_inflight_messages", c.Session.MaxInflightMessages, 1, 65535)
	v.intMin("session.max_queued_messages", c.Session.MaxQueuedMessages, 0)
	v.intMin("session.max_queued_bytes", c.Session.MaxQueuedBytes, 0)
	if c.Session.RetryInterval < 0 {
		v.add("session.retry_interval", "must be 0s (off) or more, got %s", c.Session.RetryInterval)
	}
	if c.Session.RetryMaxInterval <= 0 {
		v.add("session.retry_max_interval", "must be greater than 0s, got %s", c.Session.RetryMaxInterval)
	}
	if c.Session.Expiry < 0 {
		v.add("session.expiry", "must be 0s (never) or more, got %s", c.Session.Expiry)
	}

	v.oneOf("log.level", c.Log.Level, logLevels)
	v.oneOf("log.format", c.Log.Format, logFormats)

	if c.Server.ShutdownTimeout <= 0 {
		v.add("server.shutdown_timeout", "must be greater than 0s, got %s", c.Server.ShutdownTimeout)
	}
	v.intRange("server.workers", c.Server.Workers, 0, maxWorkers)
	return v.errs
}

// validator collects FieldErrors so that one run reports every problem.
type validator struct {
	errs []error
}

func (v *validator) add(path, format string, args ...any) {
	v.errs = append(v.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) intRange(path string, got, lo, hi int) {
	if got < lo || got > hi {
		v.add(path, "must be between %d and %d, got %d", lo, hi, got)
	}
}

func (v *validator) intMin(path string, got, lo int) {
	if got >= lo {
		return
	}
	if lo == 0 {
		v.add(path, "must be 0 or more, got %d", got)
		return
	}
	v.add(path, "must be at least %d, got %d", lo, got)
}

func (v *validator) durationRange(path string, got, lo, hi Duration) {
	if got < lo || got > hi {
		v.add(path, "must be between %s and %s, got %s", lo, hi, got)
	}
}

func (v *validator) oneOf(path, got string, allowed []string) {
	for _, a := range allowed {
		if got == a {
			return
		}
	}
	v.add(path, "must be one of %s, got %q", quoteList(allowed), got)
}

// listeners checks each listener and that no two share a name or an address.
func (v *validator) listeners(ls []Listener) {
	if len(ls) == 0 {
		v.add("listener", "at least one listener is required")
		return
	}
	names := make(map[string]int, len(ls))
	addrs := make(map[string]int, len(ls))
	for i, l := range ls {
		path := func(key string) string { return fmt.Sprintf("listener[%d].%s", i, key) }

		switch prev, dup := names[l.Name]; {
		case l.Name == "":
			v.add(path("name"), "must not be empty")
		case dup:
			v.add(path("name"), "duplicate name %q, also used by listener[%d]", l.Name, prev)
		default:
			names[l.Name] = i
		}

		v.oneOf(path("type"), l.Type, listenerTypes)

		addr, ok := v.address(path("address"), l.Address)
		if !ok {
			continue
		}
		// Port 0 picks a free port at listen time, so two such listeners on
		// one host do not collide.
		if strings.HasSuffix(addr, ":0") {
			continue
		}
		if prev, dup := addrs[addr]; dup {
			v.add(path("address"), "duplicate address %q, also used by listener[%d]", l.Address, prev)
			continue
		}
		addrs[addr] = i
	}
}

// address checks a host:port listen address and returns it in canonical
// form (port without leading zeros) for duplicate detection.
func (v *validator) address(path, addr string) (string, bool) {
	if addr == "" {
		v.add(path, "is required (host:port, for example \"0.0.0.0:1883\")")
		return "", false
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(path, "must be host:port, got %q", addr)
		return "", false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		v.add(path, "port must be a number between 0 and 65535, got %q", port)
		return "", false
	}
	return net.JoinHostPort(host, strconv.FormatUint(n, 10)), true
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, e := range s {
		q[i] = strconv.Quote(e)
	}
	return strings.Join(q, ", ")
}
