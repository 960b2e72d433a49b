// Package tlsconf builds the TLS configuration of IoTD's listeners from PEM files and swaps in
// new certificates and CA bundles while the broker runs.
//
// The *tls.Config handed to listeners never changes; its GetConfigForClient callback reads the
// current material from an atomic pointer at the start of each handshake. A reload therefore
// affects new handshakes only: established connections keep the keys they negotiated. Material
// that fails to load is never installed, so a half-written or broken file leaves the listener
// serving the last good certificate.
//
// Client certificates are verified by crypto/tls with the standard x509 verifier against the CA
// bundle (chain, validity period, extended key usage clientAuth). Go re-verifies the stored chain
// against the current bundle when a session is resumed, so a CA removed by a reload also stops
// resumptions. Identity maps a verified certificate to the name the broker authenticates.
package tlsconf

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Client authentication modes accepted in Options.ClientAuth.
const (
	ClientAuthNone     = "none"     // no client certificate is requested
	ClientAuthOptional = "optional" // a certificate is requested and verified if the client sends one
	ClientAuthRequired = "required" // a verified certificate is required for the handshake to succeed
)

// Identity sources accepted in Options.IdentityFrom and by Identity.
const (
	IdentityCN       = "cn"        // the subject common name
	IdentitySANDNS   = "san-dns"   // the first DNS subject alternative name
	IdentitySANEmail = "san-email" // the first e-mail subject alternative name
	IdentitySANURI   = "san-uri"   // the first URI subject alternative name
)

// Options says where a listener's TLS material lives and how clients are checked. The zero
// values of the optional fields are the defaults documented on each field.
type Options struct {
	CertFile     string // PEM server certificate chain, leaf first (required)
	KeyFile      string // PEM private key of the leaf (required)
	CAFile       string // PEM CA bundle that client certificates must chain to; required unless ClientAuth is "none"
	ClientAuth   string // "none" (default), "optional" (verify if given) or "required"
	MinVersion   string // lowest TLS version: "1.2" (default) or "1.3"; older versions are refused
	IdentityFrom string // where a client certificate's identity comes from: "cn" (default), "san-dns", "san-email", "san-uri"
}

// Config is a listener's reloadable TLS configuration. It is safe for concurrent use.
type Config struct {
	opts       Options
	log        *slog.Logger
	clientAuth tls.ClientAuthType
	minVersion uint16

	reloadMu sync.Mutex               // serialises Reload, so an older read can never win over a newer one
	cur      atomic.Pointer[material] // what new handshakes use
}

// material is one consistent, loaded generation of certificate, key and CA bundle.
type material struct {
	certPEM, keyPEM, caPEM []byte // file contents, to tell a real change from a touched file
	leaf                   *x509.Certificate
	cfg                    *tls.Config // the per-handshake config; read-only once built
}

// New checks opts, loads the files and returns the configuration. Errors name the option or file
// at fault. log may be nil.
func New(opts Options, log *slog.Logger) (*Config, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Config{opts: opts, log: log}
	if err := c.parseOptions(); err != nil {
		return nil, err
	}
	m, err := c.load()
	if err != nil {
		return nil, err
	}
	c.cur.Store(m)
	c.logLoaded("tls certificate loaded", m)
	if opts.CAFile != "" && c.clientAuth == tls.NoClientCert {
		log.Warn("tls CA file is ignored because client_auth is none", "ca_file", opts.CAFile)
	}
	return c, nil
}

// parseOptions validates the option strings and fills in the defaults, reporting every problem.
func (c *Config) parseOptions() error {
	var errs []error
	o := &c.opts
	if o.CertFile == "" {
		errs = append(errs, errors.New("tlsconf: certificate file is not set"))
	}
	if o.KeyFile == "" {
		errs = append(errs, errors.New("tlsconf: key file is not set"))
	}
	switch o.ClientAuth {
	case "", ClientAuthNone:
		o.ClientAuth = ClientAuthNone
		c.clientAuth = tls.NoClientCert
	case ClientAuthOptional:
		c.clientAuth = tls.VerifyClientCertIfGiven
	case ClientAuthRequired:
		c.clientAuth = tls.RequireAndVerifyClientCert
	default:
		errs = append(errs, fmt.Errorf("tlsconf: client auth %q: want none, optional or required", o.ClientAuth))
	}
	if c.clientAuth != tls.NoClientCert && o.CAFile == "" {
		errs = append(errs, fmt.Errorf("tlsconf: client auth %q needs a CA file to verify client certificates", o.ClientAuth))
	}
	switch o.MinVersion {
	case "", "1.2":
		o.MinVersion = "1.2"
		c.minVersion = tls.VersionTLS12
	case "1.3":
		c.minVersion = tls.VersionTLS13
	case "1.0", "1.1", "1", "ssl3", "SSL3":
		// TLS 1.0 and 1.1 are deprecated by RFC 8996.
		errs = append(errs, fmt.Errorf("tlsconf: min version %q is refused: TLS below 1.2 is insecure (RFC 8996)", o.MinVersion))
	default:
		errs = append(errs, fmt.Errorf("tlsconf: min version %q: want 1.2 or 1.3", o.MinVersion))
	}
	switch o.IdentityFrom {
	case "":
		o.IdentityFrom = IdentityCN
	case IdentityCN, IdentitySANDNS, IdentitySANEmail, IdentitySANURI:
	default:
		errs = append(errs, fmt.Errorf("tlsconf: identity from %q: want cn, san-dns, san-email or san-uri", o.IdentityFrom))
	}
	return errors.Join(errs...)
}

// load reads and checks all files and builds the per-handshake config from them.
func (c *Config) load() (*material, error) {
	m := &material{}
	var err error
	if m.certPEM, err = readPEM(c.opts.CertFile, "certificate", "CERTIFICATE"); err != nil {
		return nil, err
	}
	if m.keyPEM, err = readPEM(c.opts.KeyFile, "key", "PRIVATE KEY"); err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(m.certPEM, m.keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: certificate file %q with key file %q: %w", c.opts.CertFile, c.opts.KeyFile, err)
	}
	m.leaf = cert.Leaf
	m.cfg = &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   c.minVersion,
		ClientAuth:   c.clientAuth,
	}
	if c.opts.CAFile != "" {
		if m.caPEM, err = readPEM(c.opts.CAFile, "CA", "CERTIFICATE"); err != nil {
			return nil, err
		}
		if m.cfg.ClientCAs, err = parsePool(c.opts.CAFile, m.caPEM); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// readPEM reads a file and checks that it has a PEM block whose type ends in want, so that an
// empty or truncated file is reported by name rather than as a bare parse error.
func readPEM(path, what, want string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: read %s file: %w", what, err)
	}
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, fmt.Errorf("tlsconf: %s file %q: no PEM %s block", what, path, want)
		}
		if len(block.Type) >= len(want) && block.Type[len(block.Type)-len(want):] == want {
			return b, nil
		}
	}
}

// parsePool parses every CERTIFICATE block of a CA bundle, naming the block that is broken.
func parsePool(path string, b []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for i, rest := 1, b; ; i++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if n == 0 {
				return nil, fmt.Errorf("tlsconf: CA file %q: no CERTIFICATE block", path)
			}
			return pool, nil
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tlsconf: CA file %q, block %d: %w", path, i, err)
		}
		pool.AddCert(cert)
		n++
	}
}

// TLSConfig returns a configuration for tls.NewListener or tls.Server. Every handshake takes the
// material current at its start, so a Reload reaches new handshakes only and leaves established
// connections untouched. Handshakes use Go's default cipher suites and session tickets; the
// returned config's other fields are not consulted, so set nothing on it.
func (c *Config) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: c.minVersion,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return c.cur.Load().cfg, nil
		},
		// Not reached while GetConfigForClient answers; set so that code checking for a
		// certificate source (such as net/http's ServeTLS) finds one.
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &c.cur.Load().cfg.Certificates[0], nil
		},
	}
}

// Reload re-reads the files. If any of them fails to load, the current material stays in use
// and the error is returned; otherwise new handshakes use the new material. A successful reload
// that changed something is logged at info level.
func (c *Config) Reload() error {
	_, err := c.reload()
	return err
}

// reload is Reload that also says whether any file's content changed.
func (c *Config) reload() (changed bool, err error) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	m, err := c.load()
	if err != nil {
		return false, err
	}
	old := c.cur.Load()
	if bytes.Equal(old.certPEM, m.certPEM) && bytes.Equal(old.keyPEM, m.keyPEM) && bytes.Equal(old.caPEM, m.caPEM) {
		return false, nil
	}
	c.cur.Store(m)
	c.logLoaded("tls certificate reloaded", m)
	return true, nil
}

// logLoaded logs what a listener now serves and warns when the certificate is not valid now,
// which clients would refuse.
func (c *Config) logLoaded(msg string, m *material) {
	now := time.Now()
	attrs := []any{"cert_file", c.opts.CertFile, "subject", m.leaf.Subject.String(),
		"not_after", m.leaf.NotAfter.UTC().Format(time.RFC3339)}
	c.log.Info(msg, attrs...)
	if now.After(m.leaf.NotAfter) || now.Before(m.leaf.NotBefore) {
		c.log.Warn("tls certificate is outside its validity period", attrs...)
	}
}

// Certificate returns the leaf certificate that new handshakes present.
func (c *Config) Certificate() *x509.Certificate { return c.cur.Load().leaf }

// Identity returns the identity of the verified client certificate in state, taken from where
// Options.IdentityFrom says.
func (c *Config) Identity(state tls.ConnectionState) (string, bool) {
	return Identity(state, c.opts.IdentityFrom)
}

// Identity returns the identity of the verified client certificate in state: its subject common
// name (from "cn" or ""), or its first DNS, e-mail or URI subject alternative name ("san-dns",
// "san-email", "san-uri"). It reports false when no certificate was verified, the field is empty,
// or from is unknown. Unverified certificates (state.PeerCertificates alone) never give an identity.
func Identity(state tls.ConnectionState, from string) (string, bool) {
	if len(state.VerifiedChains) == 0 || len(state.VerifiedChains[0]) == 0 {
		return "", false
	}
	cert := state.VerifiedChains[0][0]
	var id string
	switch from {
	case "", IdentityCN:
		id = cert.Subject.CommonName
	case IdentitySANDNS:
		if len(cert.DNSNames) > 0 {
			id = cert.DNSNames[0]
		}
	case IdentitySANEmail:
		if len(cert.EmailAddresses) > 0 {
			id = cert.EmailAddresses[0]
		}
	case IdentitySANURI:
		if len(cert.URIs) > 0 {
			id = cert.URIs[0].String()
		}
	}
	return id, id != ""
}
