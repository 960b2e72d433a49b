package integration

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/packet"
)

// needIotd fails the test when TestMain could not build the binary: it is part of this
// repository, so a failed build is a failure, not a reason to skip.
func needIotd(t *testing.T) {
	t.Helper()
	if buildErr != nil {
		t.Fatalf("no iotd binary: %v", buildErr)
	}
}

var listeningRE = regexp.MustCompile(`msg=listening .*address=(\S+)`)

// startIotd starts the iotd binary with args and returns it with the address of its first
// listener, read from its "listening" log line.
func startIotd(t *testing.T, args ...string) (*proc, *iotdtest.Env) {
	t.Helper()
	needIotd(t)
	p := startProc(t, iotdBin, withDataDir(t, args)...)
	pos := 0
	line := p.waitLine(t, p.stderr, &pos, "the listening line", listeningRE.MatchString)
	addr := listeningRE.FindStringSubmatch(line)[1]
	p.waitLine(t, p.stderr, &pos, "the started line", func(l string) bool { return strings.Contains(l, `msg="iotd started"`) })
	// An Env with only the address is what the client helpers need.
	return p, &iotdtest.Env{Addr: addr}
}

// withDataDir gives iotd a temporary data directory unless args name one, so that no test leaves
// a store in the working directory.
func withDataDir(t *testing.T, args []string) []string {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") { // a subcommand: bench, passwd
		return args
	}
	for _, a := range args {
		if a == "--data-dir" || a == "--help" || a == "--version" || a == "-h" {
			return args
		}
	}
	return append([]string{"--data-dir", t.TempDir()}, args...)
}

// runIotd runs the iotd binary to its end and returns its exit code, stdout and stderr.
func runIotd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	needIotd(t)
	p := startProc(t, iotdBin, withDataDir(t, args)...)
	code := p.wait(t)
	return code, p.stdout.String(), p.stderr.String()
}

// waitExit waits until p exits and fails unless it exited with code want.
func waitExit(t *testing.T, p *proc, want int) {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(iotdtest.Timeout):
		t.Fatalf("iotd still running %v after the signal\nstderr:\n%s", iotdtest.Timeout, p.stderr)
	}
	if got := p.cmd.ProcessState.ExitCode(); got != want {
		t.Fatalf("iotd exited with %d (%v), want %d\nstderr:\n%s", got, p.err, want, p.stderr)
	}
}

// TestCommand runs the real iotd binary: flags, configuration errors and the two shutdown signals.
func TestCommand(t *testing.T) {
	t.Parallel()
	t.Run("SIGINT shuts down gracefully", func(t *testing.T) {
		t.Parallel()
		p, env := startIotd(t, "--listen", "127.0.0.1:0")
		c := dialPaho(t, env, newID("int"))
		raw := iotdtest.Dial(t, env.Addr)
		raw.MustConnect(newID("raw"), true)
		p.signal(syscall.SIGINT)
		raw.ExpectClosed()
		c.waitLost(t)
		waitExit(t, p, 0)
		for _, want := range []string{"SIGINT received: shutting down", `msg="iotd stopped"`} {
			if !strings.Contains(p.stderr.String(), want) {
				t.Errorf("stderr does not contain %q:\n%s", want, p.stderr)
			}
		}
	})
	t.Run("SIGTERM exits at once", func(t *testing.T) {
		t.Parallel()
		p, env := startIotd(t, "--listen", "127.0.0.1:0")
		raw := iotdtest.Dial(t, env.Addr)
		raw.MustConnect(newID("raw"), true)
		p.signal(syscall.SIGTERM)
		waitExit(t, p, 0)
		raw.ExpectClosed()
		if !strings.Contains(p.stderr.String(), "SIGTERM received: exiting immediately") {
			t.Errorf("stderr does not say why it exited:\n%s", p.stderr)
		}
		if strings.Contains(p.stderr.String(), "iotd stopped") {
			t.Errorf("SIGTERM went through the graceful shutdown:\n%s", p.stderr)
		}
	})
	t.Run("-c with a valid file", func(t *testing.T) {
		t.Parallel()
		cfg := filepath.Join(t.TempDir(), "iotd.toml")
		writeFile(t, cfg, "[[listener]]\nname = \"it\"\naddress = \"127.0.0.1:0\"\n\n[keepalive]\nmax = 30\n\n[log]\nlevel = \"debug\"\n")
		p, env := startIotd(t, "-c", cfg)
		if !strings.Contains(p.stderr.String(), "listener=it") {
			t.Errorf("the listener is not the configured one:\n%s", p.stderr)
		}
		// keepalive.max from the file is in force.
		refused := newPaho(t, pahoOptions(env, newID("cfg")).SetKeepAlive(time.Minute))
		if got := packet.ConnackCode(refused.connect(t).ReturnCode()); got != packet.RefusedIdentifierRejected {
			t.Errorf("keep-alive 60 s: CONNACK %v, want %v", got, packet.RefusedIdentifierRejected)
		}
		c := dialPaho(t, env, newID("cfg"), func(o *mqtt.ClientOptions) { o.SetKeepAlive(30 * time.Second) })
		c.subscribe(t, map[string]byte{"cfg/t": 0})
		// No broker log to wait on here: the subscriber's wait is enough.
		wait(t, dialPaho(t, env, newID("cfg")).Publish("cfg/t", 0, false, "ok"), "publish")
		expect(t, c, msg{Topic: "cfg/t", Payload: "ok"})
		c.Disconnect(250)
		p.signal(syscall.SIGINT)
		waitExit(t, p, 0)
	})

	bad := filepath.Join(t.TempDir(), "bad.toml")
	writeFile(t, bad, "[limits]\nmax_packet_size = 5\nbogus = 1\n")
	cases := []struct {
		name     string
		args     []string
		ok       bool
		inStdout []string
		inStderr []string
	}{
		{name: "--version", args: []string{"--version"}, ok: true, inStdout: []string{"iotd "}},
		{name: "--help", args: []string{"--help"}, ok: true, inStdout: []string{"Usage:", "-listen", "-c FILE", "-version"}},
		{name: "bad flag", args: []string{"--bogus"}, inStderr: []string{"-bogus"}},
		{name: "unexpected argument", args: []string{"serve"}, inStderr: []string{`"serve"`}},
		{name: "bad listen address", args: []string{"--listen", "nonsense"}, inStderr: []string{"--listen", "nonsense"}},
		{name: "bad config file", args: []string{"-c", bad},
			inStderr: []string{bad, "limits.bogus", "unknown key", "limits.max_packet_size"}},
		{name: "missing config file", args: []string{"-c", bad + ".missing"}, inStderr: []string{bad + ".missing"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := runIotd(t, tc.args...)
			if tc.ok != (code == 0) {
				t.Errorf("exit code %d, want success %t\nstdout:\n%s\nstderr:\n%s", code, tc.ok, stdout, stderr)
			}
			for _, want := range tc.inStdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout does not contain %q:\n%s", want, stdout)
				}
			}
			for _, want := range tc.inStderr {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, stderr)
				}
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
