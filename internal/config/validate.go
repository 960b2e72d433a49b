package config

import (
	"cmp"
	"errors"
	"fmt"
	"math"
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
var listenerTypes = []string{"tcp", "tls"}

var (
	clientAuths    = []string{"none", "optional", "required"}
	identitySource = []string{"cn", "san-dns", "san-email", "san-uri"}
	tlsVersions    = []string{"1.2", "1.3"}

	storeBackends  = []string{"file", "sqlite", "memory"}
	fsyncPolicies  = []string{"always", "interval", "never"}
	corruptActions = []string{"fail", "move-aside"}

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
	v.rate("limits.connection_rate", l.ConnectionRate)
	v.intMin("limits.connection_burst", l.ConnectionBurst, 0)
	v.rate("limits.total_connection_rate", l.TotalConnectionRate)
	v.intMin("limits.total_connection_burst", l.TotalConnectionBurst, 0)
	if l.AuthFailDelay < 0 {
		v.add("limits.auth_fail_delay", "must be 0s (off) or more, got %s", l.AuthFailDelay)
	}
	switch {
	case l.AuthFailMaxDelay < 0:
		v.add("limits.auth_fail_max_delay", "must be 0s or more, got %s", l.AuthFailMaxDelay)
	case l.AuthFailMaxDelay < l.AuthFailDelay:
		v.add("limits.auth_fail_max_delay", "must be at least limits.auth_fail_delay (%s), got %s",
			l.AuthFailDelay, l.AuthFailMaxDelay)
	}

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

	st := c.Store
	v.oneOf("store.backend", st.Backend, storeBackends)
	if st.Dir == "" && st.Backend != "memory" {
		v.add("store.dir", "must not be empty (it is only optional with backend \"memory\")")
	}
	v.oneOf("store.fsync", st.Fsync, fsyncPolicies)
	v.durationRange("store.fsync_interval", st.FsyncInterval, minFsyncInterval, maxFsyncInterval)
	v.oneOf("store.on_corrupt", st.OnCorrupt, corruptActions)

	if c.Auth.CacheTTL < 0 {
		v.add("auth.cache_ttl", "must be 0s (no cache) or more, got %s", c.Auth.CacheTTL)
	}
	v.loginPossible(c)

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

// rate checks a rate per second, where 0 means unlimited. The comparison is
// written so that NaN fails it, and TOML's inf is refused too: "no limit"
// has one spelling, 0.
func (v *validator) rate(path string, got float64) {
	if !(got >= 0) || math.IsInf(got, 0) {
		v.add(path, "must be a number of connections per second, 0 (no limit) or more, got %v", got)
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

		if addr, ok := v.address(path("address"), l.Address); ok {
			switch prev, dup := addrs[addr]; {
			case strings.HasSuffix(addr, ":0"):
				// Port 0 picks a free port at listen time, so two such
				// listeners on one host do not collide.
			case dup:
				// tcp and tls listeners both bind a TCP port, so the check
				// spans types.
				v.add(path("address"), "duplicate address %q, also used by listener[%d]", l.Address, prev)
			default:
				addrs[addr] = i
			}
		}

		if l.Type == "tls" {
			v.tls(path, l)
		} else {
			v.notTLS(path, l)
		}
	}
}

// tls checks the TLS keys of a "tls" listener.
func (v *validator) tls(path func(string) string, l Listener) {
	if l.CertFile == "" {
		v.add(path("cert_file"), "is required for a tls listener (PEM certificate chain)")
	}
	if l.KeyFile == "" {
		v.add(path("key_file"), "is required for a tls listener (PEM private key)")
	}
	auth := cmp.Or(l.ClientAuth, defaultClientAuth)
	switch {
	case l.CAFile == "" && (auth == "optional" || auth == "required"):
		v.add(path("ca_file"), "is required when client_auth is %q (the CAs that client certificates must chain to)", auth)
	case l.CAFile != "" && auth == "none":
		// Go's TLS would load the bundle and never use it: reject the
		// mismatch instead of letting the operator believe clients are
		// verified.
		v.add(path("ca_file"), "is set but client_auth is \"none\", so no client certificate is verified; set client_auth to \"optional\" or \"required\", or remove ca_file")
	}
	v.oneOf(path("client_auth"), auth, clientAuths)
	if l.IdentityFrom != "" {
		v.oneOf(path("identity_from"), l.IdentityFrom, identitySource)
		if auth == "none" {
			v.add(path("identity_from"), "needs client_auth \"optional\" or \"required\": with \"none\" there is no client certificate")
		}
	}
	v.oneOf(path("min_tls_version"), cmp.Or(l.MinTLSVersion, defaultMinTLSVersion), tlsVersions)
}

// notTLS reports the TLS keys a listener of another type sets: they would
// be ignored, and a certificate that is silently ignored leaves plain text
// where the operator expected encryption.
func (v *validator) notTLS(path func(string) string, l Listener) {
	set := func(key string, isSet bool) {
		if isSet {
			v.add(path(key), "only applies to type \"tls\", not %q", l.Type)
		}
	}
	set("cert_file", l.CertFile != "")
	set("key_file", l.KeyFile != "")
	set("ca_file", l.CAFile != "")
	set("client_auth", l.ClientAuth != "" && l.ClientAuth != defaultClientAuth)
	set("identity_from", l.IdentityFrom != "")
	set("min_tls_version", l.MinTLSVersion != "" && l.MinTLSVersion != defaultMinTLSVersion)
}

// loginPossible reports each listener on which no client could ever log
// in: anonymous access is off, there is no password file, and no client
// certificate gives an identity. Such a listener is surely a mistake, found
// more easily at startup than by clients that are all refused.
func (v *validator) loginPossible(c *Config) {
	if c.Auth.PasswordFile != "" {
		return
	}
	var names []string
	for i, l := range c.Listeners {
		if c.AnonymousAllowed(l) || l.IdentityFrom != "" {
			continue
		}
		if l.AllowAnonymous != nil {
			v.add(fmt.Sprintf("listener[%d].allow_anonymous", i),
				"is false but auth.password_file is empty and identity_from is not set, so no client can log in on this listener")
			continue
		}
		names = append(names, strconv.Quote(l.Name))
	}
	if len(names) > 0 {
		v.add("auth.allow_anonymous", "is false but auth.password_file is empty, so no client can log in on listener %s (set identity_from to use client certificates)",
			strings.Join(names, ", "))
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
