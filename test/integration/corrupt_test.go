package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/iotd/iotd/internal/iotdtest"
)

// TestCorruptStore starts the real binary on a damaged store: it must refuse to start with an
// error that names the store and says what to do, leave every byte as it was, and start (having
// moved the damaged store aside) only when asked to with --store-move-aside.
func TestCorruptStore(t *testing.T) {
	for _, backend := range []string{"file", "sqlite"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			// A store with real content first, written and closed by the broker itself.
			p, env := startIotd(t, "--listen", "127.0.0.1:0", "--data-dir", dir, "--store", backend)
			c := iotdtest.Dial(t, env.Addr)
			c.MustConnect("keeper", false)
			c.Subscribe(1, 1, "keep/#")
			stopIotd(t, p, syscall.SIGINT)

			sub := "pebble"
			if backend == "sqlite" {
				sub = "sqlite"
			}
			storeDir := filepath.Join(dir, sub)
			files, err := os.ReadDir(storeDir)
			if err != nil || len(files) == 0 {
				t.Fatalf("no store files in %s: %v", storeDir, err)
			}
			// Damage every file: garbage over its head (a truncated copy of itself for the rest).
			before := map[string][]byte{}
			for _, f := range files {
				path := filepath.Join(storeDir, f.Name())
				if f.IsDir() || f.Name() == "LOCK" {
					continue
				}
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				bad := append(bytes.Repeat([]byte{0xA5}, 64), b[:len(b)/2]...)
				if err := os.WriteFile(path, bad, 0o600); err != nil {
					t.Fatal(err)
				}
				before[path] = bad
			}

			code, _, stderr := runIotd(t, "--listen", "127.0.0.1:0", "--data-dir", dir, "--store", backend)
			if code != 1 {
				t.Fatalf("iotd on a damaged store exited with %d, want 1\n%s", code, stderr)
			}
			for _, want := range []string{"cannot open the store", storeDir, "cannot be read", "move-aside"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("the error lacks %q:\n%s", want, stderr)
				}
			}
			if strings.Contains(stderr, "panic") {
				t.Fatalf("panic:\n%s", stderr)
			}
			for path, b := range before {
				got, err := os.ReadFile(path)
				if err != nil || !bytes.Equal(got, b) {
					t.Fatalf("%s changed by a refused start (%v)", path, err)
				}
			}

			// Asked explicitly, it moves the store aside and starts empty.
			p, _ = startIotd(t, "--listen", "127.0.0.1:0", "--data-dir", dir, "--store", backend, "--store-move-aside")
			if !strings.Contains(p.stderr.String(), "moved aside") {
				t.Fatalf("no move-aside line:\n%s", p.stderr)
			}
			stopIotd(t, p, syscall.SIGINT)
			moved, _ := filepath.Glob(storeDir + ".corrupt-*")
			if len(moved) != 1 {
				t.Fatalf("moved stores: %v", moved)
			}
			for path, b := range before {
				got, err := os.ReadFile(filepath.Join(moved[0], filepath.Base(path)))
				if err != nil || !bytes.Equal(got, b) {
					t.Fatalf("%s not kept as it was in %s (%v)", filepath.Base(path), moved[0], err)
				}
			}
		})
	}
}
