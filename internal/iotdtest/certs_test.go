package iotdtest_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/iotd/iotd/internal/iotdtest"
)

// loadCert parses the single certificate in a PEM file.
func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("%s: no CERTIFICATE block", path)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func TestPKI(t *testing.T) {
	p := iotdtest.NewPKI(t, "")
	roots := x509.NewCertPool()
	roots.AddCert(loadCert(t, p.CAFile))
	verify := func(path string, usage x509.ExtKeyUsage, name string) error {
		_, err := loadCert(t, path).Verify(x509.VerifyOptions{
			Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage},
		})
		return err
	}

	expiredCert, _ := p.Client(t, "old", iotdtest.Expired())
	otherCert, _ := p.Client(t, "stranger", iotdtest.OtherCA())
	sanCert, _ := p.Client(t, "sans", iotdtest.DNSNames("dev.example"), iotdtest.Emails("a@example.com"),
		iotdtest.URIs("spiffe://example/dev"))
	serverOnly, _ := p.Client(t, "srvonly", iotdtest.ExtKeyUsage(x509.ExtKeyUsageServerAuth))
	server2, _ := p.Server(t, "server2")
	weird, _ := p.Client(t, "a/b c")

	tests := []struct {
		name  string
		file  string
		usage x509.ExtKeyUsage
		host  string
		ok    bool
	}{
		{"server for localhost", p.ServerCert, x509.ExtKeyUsageServerAuth, "localhost", true},
		{"server for 127.0.0.1", p.ServerCert, x509.ExtKeyUsageServerAuth, "127.0.0.1", true},
		{"server for ::1", p.ServerCert, x509.ExtKeyUsageServerAuth, "::1", true},
		{"second server", server2, x509.ExtKeyUsageServerAuth, "localhost", true},
		{"client1", p.ClientCert, x509.ExtKeyUsageClientAuth, "", true},
		{"client cert is no server cert", p.ClientCert, x509.ExtKeyUsageServerAuth, "", false},
		{"server-only usage is no client cert", serverOnly, x509.ExtKeyUsageClientAuth, "", false},
		{"expired client", expiredCert, x509.ExtKeyUsageClientAuth, "", false},
		{"client from another CA", otherCert, x509.ExtKeyUsageClientAuth, "", false},
		{"client with SANs", sanCert, x509.ExtKeyUsageClientAuth, "", true},
		{"odd common name", weird, x509.ExtKeyUsageClientAuth, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verify(tt.file, tt.usage, tt.host)
			if (err == nil) != tt.ok {
				t.Fatalf("verify: got %v, want ok=%v", err, tt.ok)
			}
			if !strings.HasPrefix(tt.file, p.Dir) {
				t.Errorf("%s is outside %s", tt.file, p.Dir)
			}
		})
	}

	t.Run("client1 identity and SANs", func(t *testing.T) {
		if cn := loadCert(t, p.ClientCert).Subject.CommonName; cn != "client1" {
			t.Errorf("CN: got %q, want client1", cn)
		}
		c := loadCert(t, sanCert)
		if len(c.DNSNames) != 1 || len(c.EmailAddresses) != 1 || len(c.URIs) != 1 ||
			c.URIs[0].String() != "spiffe://example/dev" {
			t.Errorf("SANs: got %v %v %v", c.DNSNames, c.EmailAddresses, c.URIs)
		}
		if !loadCert(t, expiredCert).NotAfter.Before(time.Now()) {
			t.Error("expired certificate is still valid")
		}
	})

	t.Run("key pairs load and keys are private", func(t *testing.T) {
		for _, pair := range [][2]string{{p.ServerCert, p.ServerKey}, {p.ClientCert, p.ClientKey}} {
			if _, err := tls.LoadX509KeyPair(pair[0], pair[1]); err != nil {
				t.Errorf("%s: %v", pair[0], err)
			}
			fi, err := os.Stat(pair[1])
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s: mode %v, want owner-only", pair[1], fi.Mode().Perm())
			}
		}
	})

	t.Run("given directory", func(t *testing.T) {
		dir := t.TempDir()
		q := iotdtest.NewPKI(t, dir)
		if filepath.Dir(q.CAFile) != dir || q.Dir != dir {
			t.Errorf("files in %s, want %s", filepath.Dir(q.CAFile), dir)
		}
	})

	// OpenSSL is what mosquitto_pub and mosquitto_sub use to read --cafile/--cert/--key.
	t.Run("openssl accepts the files", func(t *testing.T) {
		openssl, err := exec.LookPath("openssl")
		if err != nil {
			t.Skip("openssl not installed")
		}
		for _, args := range [][]string{
			{"verify", "-CAfile", p.CAFile, "-purpose", "sslserver", p.ServerCert},
			{"verify", "-CAfile", p.CAFile, "-purpose", "sslclient", p.ClientCert},
			{"pkey", "-in", p.ClientKey, "-noout"},
			{"pkey", "-in", p.ServerKey, "-noout"},
		} {
			if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
				t.Errorf("openssl %v: %v\n%s", args, err, out)
			}
		}
	})
}
