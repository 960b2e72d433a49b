package tlsconf_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/tlsconf"
)

// watch runs c.Watch until the test ends and checks that it returns nil once its context ends.
func watch(t *testing.T, c *tlsconf.Config) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch returned %v, want nil", err)
		}
	})
}

// renameOver writes the content of src to a temporary file next to dst and renames it over dst,
// as editors, certbot and cert-manager do.
func renameOver(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
}

// waitServed polls until new handshakes present the certificate with serial want.
func waitServed(t *testing.T, addr string, p *iotdtest.PKI, want string) {
	t.Helper()
	cfg := clientConfig(t, p, "", "")
	var got string
	iotdtest.Eventually(t, func() bool {
		got = servedSerial(t, addr, cfg)
		return got == want
	}, "the server to present serial %s (last %s)", want, got)
}

func TestWatch(t *testing.T) {
	t.Run("file replaced by rename", func(t *testing.T) {
		p := iotdtest.NewPKI(t, "")
		logs := &iotdtest.Logs{}
		c := newConfig(t, tlsconf.Options{CertFile: p.ServerCert, KeyFile: p.ServerKey},
			slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		srv := serve(t, c.TLSConfig())
		watch(t, c)
		existing, err := dial(t, srv.addr, clientConfig(t, p, "", ""))
		if err != nil {
			t.Fatal(err)
		}

		cert, key := p.Server(t, "renamed")
		renameOver(t, cert, p.ServerCert)
		renameOver(t, key, p.ServerKey)
		waitServed(t, srv.addr, p, loadCert(t, cert).SerialNumber.String())
		logs.WaitFor(t, "tls certificate reloaded", "CN=renamed")
		if err := ping(existing); err != nil {
			t.Errorf("existing connection after reload: %v", err)
		}

		// A broken replacement is logged and the certificate in use stays.
		if err := os.WriteFile(p.ServerKey+".bad", []byte("garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
		renameOver(t, p.ServerKey+".bad", p.ServerKey)
		logs.WaitFor(t, "tls reload failed", p.ServerKey)
		waitServed(t, srv.addr, p, loadCert(t, cert).SerialNumber.String())
	})

	// Kubernetes secret volumes: name -> ..data/name, and ..data -> ..<timestamp> is swapped by
	// renaming a new symlink over it.
	t.Run("kubernetes symlink swap", func(t *testing.T) {
		p := iotdtest.NewPKI(t, "")
		dir := t.TempDir()
		version := func(name, cert, key string) {
			vdir := filepath.Join(dir, name)
			if err := os.Mkdir(vdir, 0o700); err != nil {
				t.Fatal(err)
			}
			copyFile(t, cert, filepath.Join(vdir, "tls.crt"))
			copyFile(t, key, filepath.Join(vdir, "tls.key"))
			if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
				t.Fatal(err)
			}
		}
		version("..v1", p.ServerCert, p.ServerKey)
		for _, f := range []string{"tls.crt", "tls.key"} {
			if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
				t.Fatal(err)
			}
		}
		c := newConfig(t, tlsconf.Options{CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}, nil)
		srv := serve(t, c.TLSConfig())
		watch(t, c)

		cert, key := p.Server(t, "k8s")
		version("..v2", cert, key)
		waitServed(t, srv.addr, p, loadCert(t, cert).SerialNumber.String())
	})

	t.Run("CA in its own directory", func(t *testing.T) {
		p := iotdtest.NewPKI(t, "")
		q := iotdtest.NewPKI(t, "")
		caDir := t.TempDir()
		caFile := filepath.Join(caDir, "ca.pem")
		copyFile(t, p.CAFile, caFile)
		c := newConfig(t, tlsconf.Options{CertFile: p.ServerCert, KeyFile: p.ServerKey, CAFile: caFile, ClientAuth: "required"}, nil)
		srv := serve(t, c.TLSConfig())
		watch(t, c)
		renameOver(t, q.CAFile, caFile)
		fromQ := clientConfig(t, p, q.ClientCert, q.ClientKey)
		iotdtest.Eventually(t, func() bool {
			_, err := dial(t, srv.addr, fromQ)
			return err == nil
		}, "a client of the new CA to be accepted")
	})

	t.Run("missing directory", func(t *testing.T) {
		dir := t.TempDir()
		p := iotdtest.NewPKI(t, dir)
		c := newConfig(t, tlsconf.Options{CertFile: p.ServerCert, KeyFile: p.ServerKey}, nil)
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := c.Watch(context.Background()); err == nil {
			t.Fatal("Watch of a removed directory succeeded")
		}
	})
}
