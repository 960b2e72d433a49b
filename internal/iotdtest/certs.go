package iotdtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// PKI is a throwaway certificate authority with a server and a client certificate, generated
// by a test into a directory. Private keys only ever exist in test temp directories; none is
// committed. Every file is PEM (certificates as CERTIFICATE, keys as PKCS #8 PRIVATE KEY), so
// OpenSSL-based tools such as mosquitto_pub --cafile/--cert/--key read them as they are.
type PKI struct {
	Dir        string // directory holding every file below
	CAFile     string // the CA certificate, for a client's --cafile and a server's client-CA bundle
	ServerCert string // server certificate for 127.0.0.1, ::1 and localhost, signed by the CA
	ServerKey  string // its private key
	ClientCert string // client certificate with CN "client1", signed by the CA
	ClientKey  string // its private key

	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	other *PKI // lazily made CA that this PKI does not trust, for OtherCA
}

// CertOption changes a certificate made by PKI.Client or PKI.Server.
type CertOption func(*certSpec)

// certSpec is what a CertOption edits before the certificate is signed.
type certSpec struct {
	tmpl    x509.Certificate
	otherCA bool
}

// Expired makes a certificate whose validity ended a day ago.
func Expired() CertOption {
	return func(s *certSpec) {
		s.tmpl.NotBefore = time.Now().Add(-48 * time.Hour)
		s.tmpl.NotAfter = time.Now().Add(-24 * time.Hour)
	}
}

// OtherCA signs the certificate with a second CA that the PKI's CAFile does not contain, so a
// peer verifying against CAFile must refuse it.
func OtherCA() CertOption { return func(s *certSpec) { s.otherCA = true } }

// DNSNames adds DNS subject alternative names.
func DNSNames(names ...string) CertOption {
	return func(s *certSpec) { s.tmpl.DNSNames = append(s.tmpl.DNSNames, names...) }
}

// Emails adds e-mail subject alternative names.
func Emails(addrs ...string) CertOption {
	return func(s *certSpec) { s.tmpl.EmailAddresses = append(s.tmpl.EmailAddresses, addrs...) }
}

// URIs adds URI subject alternative names; it panics on a malformed URI, which is a bug in the test.
func URIs(uris ...string) CertOption {
	return func(s *certSpec) {
		for _, raw := range uris {
			u, err := url.Parse(raw)
			if err != nil {
				panic("iotdtest.URIs: " + err.Error())
			}
			s.tmpl.URIs = append(s.tmpl.URIs, u)
		}
	}
}

// ExtKeyUsage replaces the certificate's extended key usages, e.g. to make a client certificate
// that is only good for servers.
func ExtKeyUsage(usages ...x509.ExtKeyUsage) CertOption {
	return func(s *certSpec) { s.tmpl.ExtKeyUsage = usages }
}

// NewPKI makes an ECDSA P-256 CA, a server certificate for 127.0.0.1, ::1 and localhost, and a
// client certificate with CN "client1", and writes them to dir (a new t.TempDir() when dir is
// empty). Certificates are valid from an hour ago for a day.
func NewPKI(t testing.TB, dir string) *PKI {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	p := &PKI{Dir: dir}
	p.ca, p.caKey = newCA(t, "IoTD test CA")
	p.CAFile = filepath.Join(dir, "ca.pem")
	writePEM(t, p.CAFile, "CERTIFICATE", p.ca.Raw, 0o644)
	p.ServerCert, p.ServerKey = p.issue(t, "server", serverTemplate("localhost"), nil)
	p.ClientCert, p.ClientKey = p.Client(t, "client1")
	return p
}

// Client issues a client certificate (extended key usage clientAuth) with common name cn and
// returns the paths of its certificate and key files. Options make it expired, signed by an
// untrusted CA, or give it SANs.
func (p *PKI) Client(t testing.TB, cn string, opts ...CertOption) (certFile, keyFile string) {
	t.Helper()
	tmpl := baseTemplate(cn)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return p.issue(t, "client-"+cn, tmpl, opts)
}

// Server issues another server certificate like the one NewPKI makes, with common name cn; tests
// use it to swap a listener's certificate. It returns the paths of the certificate and key files.
func (p *PKI) Server(t testing.TB, cn string, opts ...CertOption) (certFile, keyFile string) {
	t.Helper()
	return p.issue(t, "server-"+cn, serverTemplate(cn), opts)
}

// serverTemplate is a server certificate for the loopback addresses and localhost.
func serverTemplate(cn string) x509.Certificate {
	tmpl := baseTemplate(cn)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tmpl.DNSNames = []string{"localhost"}
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	return tmpl
}

// baseTemplate is an end-entity certificate valid from an hour ago (clock skew) for a day.
func baseTemplate(cn string) x509.Certificate {
	return x509.Certificate{
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"IoTD tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
}

// issue applies opts to tmpl, signs it and writes name-*.pem and name-*.key into p.Dir; the
// random part keeps repeated names apart.
func (p *PKI) issue(t testing.TB, name string, tmpl x509.Certificate, opts []CertOption) (certFile, keyFile string) {
	t.Helper()
	spec := certSpec{tmpl: tmpl}
	for _, o := range opts {
		o(&spec)
	}
	ca, caKey := p.ca, p.caKey
	if spec.otherCA {
		if p.other == nil {
			p.other = &PKI{}
			p.other.ca, p.other.caKey = newCA(t, "IoTD untrusted test CA")
		}
		ca, caKey = p.other.ca, p.other.caKey
	}
	key := newKey(t)
	spec.tmpl.SerialNumber = newSerial(t)
	der, err := x509.CreateCertificate(rand.Reader, &spec.tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatalf("iotdtest: sign %s: %v", name, err)
	}
	f, err := os.CreateTemp(p.Dir, fileSafe(name)+"-*.pem")
	if err != nil {
		t.Fatalf("iotdtest: %v", err)
	}
	f.Close()
	certFile = f.Name()
	keyFile = strings.TrimSuffix(certFile, ".pem") + ".key"
	writePEM(t, certFile, "CERTIFICATE", der, 0o644)
	writeKey(t, keyFile, key)
	return certFile, keyFile
}

// newCA makes a self-signed P-256 CA certificate valid for a day.
func newCA(t testing.TB, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(t),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"IoTD tests"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("iotdtest: create CA: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("iotdtest: parse CA: %v", err)
	}
	return cert, key
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("iotdtest: generate key: %v", err)
	}
	return key
}

// newSerial returns a random positive 128-bit serial number, as RFC 5280 asks for unique serials.
func newSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatalf("iotdtest: serial: %v", err)
	}
	return n.Add(n, big.NewInt(1))
}

// writeKey writes key as a PKCS #8 PEM file readable only by its owner.
func writeKey(t testing.TB, path string, key *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("iotdtest: marshal key: %v", err)
	}
	writePEM(t, path, "PRIVATE KEY", der, 0o600)
}

func writePEM(t testing.TB, path, typ string, der []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), perm); err != nil {
		t.Fatalf("iotdtest: %v", err)
	}
}

// fileSafe keeps letters, digits, '-' and '_' of a common name so it can be part of a file name.
func fileSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, s)
}
