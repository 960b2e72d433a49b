package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/iotd/iotd/internal/auth"
)

// login reports what the broker's file authenticator says about user and password in file.
func login(t *testing.T, file, user, password string) error {
	t.Helper()
	f, err := auth.NewFile(auth.FileOptions{PasswordFile: file, CacheTTL: -1})
	if err != nil {
		t.Fatalf("load %s: %v", file, err)
	}
	return f.Authenticate(context.Background(), &auth.Credentials{
		Client: auth.Client{ClientID: "c", Username: user}, HasUsername: true,
		Password: []byte(password), HasPassword: true})
}

func TestRunPasswd(t *testing.T) {
	const other = "# managed by hand\r\nbob:$6$AQIDBAUGBwgJCgsM$S0QHkjpkvtUsxmMOtsu5t2SVnAvyhCIScUsV0AOs3QSWZm8gdwUZHyp8NoB4guBGduqelpvHIWIjFXB2Gjq2fQ==\r\n\r\n"
	tests := []struct {
		name       string
		initial    *string // file content before the run; nil: no file
		args       []string
		stdin      string
		wantCode   int
		wantStderr string
		// after the run: passwords that must work and ones that must not
		good, bad [][2]string
		keep      []string // substrings the file must still hold
	}{
		{name: "create batch", args: []string{"-b", "-c", "FILE", "alice", "wonder"}, wantCode: 0,
			good: [][2]string{{"alice", "wonder"}}, bad: [][2]string{{"alice", "wander"}}},
		{name: "create from stdin", args: []string{"-c", "FILE", "alice"}, stdin: "piped pass\r\nignored\n",
			good: [][2]string{{"alice", "piped pass"}}},
		{name: "stdin without newline", args: []string{"-c", "FILE", "alice"}, stdin: "last",
			good: [][2]string{{"alice", "last"}}},
		{name: "add keeps other lines", initial: ptr(other), args: []string{"-b", "FILE", "alice", "a"},
			good: [][2]string{{"alice", "a"}, {"bob", "secret6"}}, keep: []string{"# managed by hand\r\n", "\r\n\r\n"}},
		{name: "change password in place", initial: ptr(other), args: []string{"-b", "FILE", "bob", "new"},
			good: [][2]string{{"bob", "new"}}, bad: [][2]string{{"bob", "secret6"}}, keep: []string{"# managed by hand\r\nbob:$7$101$"}},
		{name: "custom iterations", args: []string{"-c", "-b", "-I", "1000", "FILE", "alice", "x"},
			good: [][2]string{{"alice", "x"}}, keep: []string{"alice:$7$1000$"}},
		{name: "delete", initial: ptr(other + "alice:" + mustHash(t, "a") + "\n"), args: []string{"-D", "FILE", "bob"},
			good: [][2]string{{"alice", "a"}}, bad: [][2]string{{"bob", "secret6"}}, keep: []string{"# managed by hand"}},
		{name: "delete a line that would not load", initial: ptr("bad:$argon2id$x\nalice:" + mustHash(t, "a") + "\n"),
			args: []string{"-D", "FILE", "bad"}, good: [][2]string{{"alice", "a"}}},
		{name: "delete unknown user", initial: ptr(other), args: []string{"-D", "FILE", "carol"}, wantCode: 1, wantStderr: `user "carol" not found`},
		{name: "refuse to write a file that would not load", initial: ptr("bad:$argon2id$x\n"), args: []string{"-b", "FILE", "alice", "a"},
			wantCode: 1, wantStderr: "the result would not load"},
		{name: "missing file without -c", args: []string{"-b", "FILE", "alice", "a"}, wantCode: 1, wantStderr: "no such file"},
		{name: "username with colon", args: []string{"-b", "-c", "FILE", "a:b", "x"}, wantCode: 1, wantStderr: "':'"},
		{name: "username not UTF-8", args: []string{"-b", "-c", "FILE", "a\xff", "x"}, wantCode: 1, wantStderr: "UTF-8"},
		{name: "empty password", args: []string{"-b", "-c", "FILE", "alice", ""}, wantCode: 1, wantStderr: "empty password"},
		{name: "no password on stdin", args: []string{"-c", "FILE", "alice"}, wantCode: 1, wantStderr: "no password on standard input"},
		{name: "no arguments", args: nil, wantCode: 2, wantStderr: "want FILE USERNAME"},
		{name: "batch without password", args: []string{"-b", "FILE", "alice"}, wantCode: 2, wantStderr: "want FILE USERNAME PASSWORD"},
		{name: "-c with -D", args: []string{"-c", "-D", "FILE", "alice"}, wantCode: 2, wantStderr: "-c and -D"},
		{name: "-b with -D", args: []string{"-b", "-D", "FILE", "alice", "x"}, wantCode: 2, wantStderr: "-b and -D"},
		{name: "zero iterations", args: []string{"-I", "0", "FILE", "alice"}, wantCode: 2, wantStderr: "-I 0"},
		{name: "unknown flag", args: []string{"-x", "FILE", "alice"}, wantCode: 2, wantStderr: "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "passwd")
			if tt.initial != nil {
				if err := os.WriteFile(file, []byte(*tt.initial), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.ReplaceAll(a, "FILE", file)
			}
			var stdout, stderr bytes.Buffer
			code := runPasswd(args, strings.NewReader(tt.stdin), &stdout, &stderr)
			if code != tt.wantCode || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tt.wantCode, tt.wantStderr)
			}
			if tt.wantCode != 0 {
				if tt.initial != nil {
					if got, _ := os.ReadFile(file); string(got) != *tt.initial {
						t.Errorf("a failed run changed the file:\n%s", got)
					}
				}
				return
			}
			st, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("mode %v, want 0600", st.Mode().Perm())
			}
			data, _ := os.ReadFile(file)
			for _, k := range tt.keep {
				if !bytes.Contains(data, []byte(k)) {
					t.Errorf("file lost %q:\n%s", k, data)
				}
			}
			for _, g := range tt.good {
				if err := login(t, file, g[0], g[1]); err != nil {
					t.Errorf("login %s/%s = %v, want nil", g[0], g[1], err)
				}
			}
			for _, b := range tt.bad {
				if err := login(t, file, b[0], b[1]); !errors.Is(err, auth.ErrBadCredentials) {
					t.Errorf("login %s/%s = %v, want ErrBadCredentials", b[0], b[1], err)
				}
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 1 {
				t.Errorf("directory holds %d entries, want only the file (no temporary left)", len(entries))
			}
		})
	}
}

func TestRunPasswdHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runPasswd([]string{"--help"}, nil, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "Usage:") {
		t.Fatalf("exit %d, stdout %q", code, stdout.String())
	}
}

func TestRunPasswdSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "link")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := runPasswd([]string{"-b", link, "alice", "a"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatal("the link was replaced by a file")
	}
	if err := login(t, target, "alice", "a"); err != nil {
		t.Fatal(err)
	}
}

func TestEditPasswords(t *testing.T) {
	tests := []struct {
		name, data, user, line, want string
		found                        bool
	}{
		{"append to empty", "", "a", "a:H", "a:H\n", false},
		{"append after missing newline", "b:X", "a", "a:H", "b:X\na:H\n", false},
		{"replace keeps CRLF", "a:X\r\nb:Y\r\n", "a", "a:H", "a:H\r\nb:Y\r\n", true},
		{"replace trims blanks", "  a : X\n", "a", "a:H", "a:H\n", true},
		{"duplicates dropped", "a:X\nb:Y\na:Z\n", "a", "a:H", "a:H\nb:Y\n", true},
		{"delete", "#c\na:X\nb:Y", "a", "", "#c\nb:Y", true},
		{"comment naming the user kept", "#a:X\n", "a", "", "#a:X\n", false},
		{"line without colon kept", "junk\n", "a", "a:H", "junk\na:H\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, found := editPasswords([]byte(tt.data), tt.user, tt.line)
			if string(got) != tt.want || found != tt.found {
				t.Fatalf("editPasswords = %q, %v; want %q, %v", got, found, tt.want, tt.found)
			}
		})
	}
}

// TestMosquittoPasswdInterop checks both directions against Debian's mosquitto_passwd: a file it
// writes verifies here, and it accepts a file `iotd passwd` wrote.
func TestMosquittoPasswdInterop(t *testing.T) {
	const tool = "/usr/bin/mosquitto_passwd"
	if _, err := os.Stat(tool); err != nil {
		t.Skip("mosquitto_passwd not installed")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if out, err := exec.Command(tool, "-b", "-c", file, "user", "pass").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd: %v\n%s", err, out)
	}
	if err := login(t, file, "user", "pass"); err != nil {
		t.Fatalf("a mosquitto_passwd line does not verify: %v", err)
	}
	if err := login(t, file, "user", "wrong"); !errors.Is(err, auth.ErrBadCredentials) {
		t.Fatalf("wrong password: %v, want ErrBadCredentials", err)
	}
	var stdout, stderr bytes.Buffer
	if code := runPasswd([]string{"-b", file, "iotd", "secret"}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("iotd passwd: exit %d: %s", code, stderr.String())
	}
	if out, err := exec.Command(tool, "-b", file, "later", "x").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_passwd on a file iotd wrote: %v\n%s", err, out)
	}
	for _, c := range [][2]string{{"user", "pass"}, {"iotd", "secret"}, {"later", "x"}} {
		if err := login(t, file, c[0], c[1]); err != nil {
			t.Errorf("login %s = %v", c[0], err)
		}
	}
}

func ptr(s string) *string { return &s }

func mustHash(t *testing.T, password string) string {
	t.Helper()
	h, err := auth.HashPassword([]byte(password), 1)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// openPTY returns the two ends of a new pseudo-terminal, or skips the test.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Skipf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pty: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// promptWriter collects what is written to it and announces each prompt on a channel, so that
// the test types only once the terminal is ready.
type promptWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	prompts chan struct{}
}

func (w *promptWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if bytes.Contains(p, []byte("assword: ")) {
		w.prompts <- struct{}{}
	}
	return w.buf.Write(p)
}

func TestRunPasswdTerminal(t *testing.T) {
	tests := []struct {
		name          string
		first, second string
		wantCode      int
		wantStderr    string
	}{
		{"matching", "s3cret", "s3cret", 0, "Reenter password: "},
		{"mismatch", "s3cret", "s3cre7", 1, "passwords do not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			master, slave := openPTY(t)
			file := filepath.Join(t.TempDir(), "pw")
			stderr := &promptWriter{prompts: make(chan struct{}, 2)}
			done := make(chan int)
			go func() { done <- runPasswd([]string{"-c", file, "alice"}, slave, io.Discard, stderr) }()
			for _, typed := range []string{tt.first, tt.second} {
				<-stderr.prompts
				if _, err := master.WriteString(typed + "\r"); err != nil {
					t.Fatal(err)
				}
			}
			code := <-done
			stderr.mu.Lock()
			msg := stderr.buf.String()
			stderr.mu.Unlock()
			if code != tt.wantCode || !strings.Contains(msg, tt.wantStderr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, msg, tt.wantCode, tt.wantStderr)
			}
			// Echo is back on: a marker typed now comes back, after anything echoed before.
			if _, err := master.WriteString("MARK\r"); err != nil {
				t.Fatal(err)
			}
			var echoed []byte
			buf := make([]byte, 256)
			for !bytes.Contains(echoed, []byte("MARK")) {
				n, err := master.Read(buf)
				if err != nil {
					t.Fatalf("read echo: %v (so far %q)", err, echoed)
				}
				echoed = append(echoed, buf[:n]...)
			}
			if bytes.Contains(echoed, []byte("s3cre")) {
				t.Fatalf("the password was echoed: %q", echoed)
			}
			if tt.wantCode == 0 {
				if err := login(t, file, "alice", tt.first); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
