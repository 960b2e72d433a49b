package auth

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// writeFile writes data to dir/name and returns the path.
func writeFile(t testing.TB, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// hashLine returns a password file line for user with a cheap hash.
func hashLine(t testing.TB, user, password string) string {
	t.Helper()
	h, err := HashPassword([]byte(password), 1)
	if err != nil {
		t.Fatal(err)
	}
	return user + ":" + h + "\n"
}

// fakeClock makes cache expiry testable without sleeping.
type fakeClock struct {
	mu sync.Mutex
	ns int64
}

func (c *fakeClock) now() int64 { c.mu.Lock(); defer c.mu.Unlock(); return c.ns }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.ns += int64(d)
	c.mu.Unlock()
}

func creds(user, password string) *Credentials {
	c := &Credentials{Client: Client{ClientID: "c1", Username: user}, HasUsername: true}
	if password != "\x00none" {
		c.Password, c.HasPassword = []byte(password), true
	}
	return c
}

func TestFileAuthenticate(t *testing.T) {
	dir := t.TempDir()
	pw := writeFile(t, dir, "pw", "# users\n"+hashLine(t, "alice", "wonderland")+mosquittoLine+"\nold:"+sha512Hash+"\n")
	anon := &Credentials{Client: Client{ClientID: "c1"}}
	tests := []struct {
		name           string
		opts           FileOptions
		c              *Credentials
		want           error
		wantCacheEntry bool
	}{
		{"right password", FileOptions{PasswordFile: pw}, creds("alice", "wonderland"), nil, true},
		{"mosquitto_passwd line", FileOptions{PasswordFile: pw}, creds("user", "pass"), nil, true},
		{"old $6$ line", FileOptions{PasswordFile: pw}, creds("old", "secret6"), nil, true},
		{"wrong password", FileOptions{PasswordFile: pw}, creds("alice", "Wonderland"), ErrBadCredentials, false},
		{"unknown user", FileOptions{PasswordFile: pw}, creds("bob", "wonderland"), ErrBadCredentials, false},
		{"no password", FileOptions{PasswordFile: pw}, creds("alice", "\x00none"), ErrBadCredentials, false},
		{"empty password", FileOptions{PasswordFile: pw}, creds("alice", ""), ErrBadCredentials, false},
		{"MQTT-1.5.3-2 NUL in username", FileOptions{PasswordFile: pw}, creds("alice\x00x", "wonderland"), ErrBadCredentials, false},
		{"empty username", FileOptions{PasswordFile: pw}, creds("", "x"), ErrBadCredentials, false},
		{"anonymous refused", FileOptions{PasswordFile: pw}, anon, ErrNotAuthorized, false},
		{"anonymous allowed", FileOptions{PasswordFile: pw, AllowAnonymous: true}, anon, nil, false},
		{"anonymous allowed but wrong password", FileOptions{PasswordFile: pw, AllowAnonymous: true}, creds("alice", "x"), ErrBadCredentials, false},
		{"no password file, anonymous allowed", FileOptions{AllowAnonymous: true}, creds("anyone", "x"), nil, false},
		{"no password file, anonymous refused", FileOptions{}, creds("anyone", "x"), ErrNotAuthorized, false},
		{"no password file, no username", FileOptions{}, anon, ErrNotAuthorized, false},
		{"caching disabled", FileOptions{PasswordFile: pw, CacheTTL: -1}, creds("alice", "wonderland"), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := NewFile(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Authenticate(context.Background(), tt.c); err != tt.want {
				t.Fatalf("Authenticate = %v, want %v", err, tt.want)
			}
			if n := f.state.Load().authCache.len(); (n == 1) != tt.wantCacheEntry {
				t.Errorf("cache holds %d entries, want cached=%v", n, tt.wantCacheEntry)
			}
		})
	}
}

func TestFileAuthenticateCache(t *testing.T) {
	dir := t.TempDir()
	pw := writeFile(t, dir, "pw", hashLine(t, "alice", "wonderland"))
	f, err := NewFile(FileOptions{PasswordFile: pw, CacheTTL: time.Minute, AuthCacheSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	f.now = clock.now
	ctx := context.Background()

	if err := f.Authenticate(ctx, creds("alice", "wonderland")); err != nil {
		t.Fatal(err)
	}
	key := f.credentialKey("alice", []byte("wonderland"))
	st := f.state.Load()
	if _, ok := st.authCache.get(binary.LittleEndian.Uint64(key[:8]), key, clock.now()); !ok {
		t.Fatal("successful login not cached")
	}
	for _, k := range st.authCache.keys() {
		if bytes.Contains(k[:], []byte("wonderland")) {
			t.Fatal("the cache key holds the password")
		}
	}

	t.Run("hit skips the hash", func(t *testing.T) {
		// Spoil the stored hash: a cached login still succeeds, an uncached one fails.
		saved := *st.users["alice"]
		st.users["alice"].sum = make([]byte, 64)
		defer func() { *st.users["alice"] = saved }()
		if err := f.Authenticate(ctx, creds("alice", "wonderland")); err != nil {
			t.Fatalf("cached login = %v, want nil", err)
		}
		clock.advance(time.Minute)
		if err := f.Authenticate(ctx, creds("alice", "wonderland")); err != ErrBadCredentials {
			t.Fatalf("login after the TTL = %v, want the hash to be checked again", err)
		}
	})
	t.Run("cancelled context on a miss", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := f.Authenticate(cctx, creds("alice", "other")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Authenticate = %v, want context.Canceled", err)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		f2, err := NewFile(FileOptions{PasswordFile: pw, AuthCacheSize: 1})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 200 {
			st := f2.state.Load()
			k := f2.credentialKey(fmt.Sprint("u", i), nil)
			st.authCache.put(binary.LittleEndian.Uint64(k[:8]), k, struct{}{}, 0)
		}
		if n := f2.state.Load().authCache.len(); n > cacheShards {
			t.Fatalf("cache of size 1 holds %d entries, want at most one per shard (%d)", n, cacheShards)
		}
	})
}

func TestFileAuthorize(t *testing.T) {
	dir := t.TempDir()
	var acl strings.Builder
	acl.WriteString("user alice\ntopic read sensors/#\ntopic deny sensors/private/#\n")
	for i := range 20 {
		fmt.Fprintf(&acl, "topic write out/%d/#\n", i)
	}
	acl.WriteString("user bob\ntopic read bob/#\npattern readwrite clients/%u/#\n")
	aclPath := writeFile(t, dir, "acl", acl.String())
	f, err := NewFile(FileOptions{ACLFile: aclPath})
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	f.now = clock.now
	alice := &Client{ClientID: "a1", Username: "alice"}
	bob := &Client{ClientID: "b1", Username: "bob"}
	checks := []struct {
		name   string
		c      *Client
		a      Access
		topic  string
		want   bool
		cached bool
	}{
		{"many rules granted", alice, Read, "sensors/t", true, true},
		{"many rules denied", alice, Read, "sensors/private/t", false, true},
		{"many rules write", alice, Write, "out/7/x", true, true},
		{"few rules granted", bob, Read, "bob/x", true, true},
		{"few rules pattern", bob, Write, "clients/bob/x", true, true},
		{"few rules denied", bob, Read, "alice/x", false, true},
	}
	for _, tt := range checks {
		t.Run(tt.name, func(t *testing.T) {
			before := f.state.Load().aclCache.len()
			for range 2 { // the second answer comes from the cache when cached
				if got := f.Authorize(tt.c, tt.a, tt.topic); got != tt.want {
					t.Fatalf("Authorize(%s, %s, %q) = %v, want %v", tt.c.Username, tt.a, tt.topic, got, tt.want)
				}
			}
			if grew := f.state.Load().aclCache.len() - before; (grew == 1) != tt.cached {
				t.Errorf("cache grew by %d, want cached=%v", grew, tt.cached)
			}
		})
	}
	t.Run("key without client id when no pattern uses it", func(t *testing.T) {
		for _, d := range f.state.Load().aclCache.values() {
			if k := d.key; k.clientID != "" {
				t.Errorf("key %+v holds the client id, want it left out", k)
			}
		}
	})
	t.Run("expiry", func(t *testing.T) {
		st := f.state.Load()
		k := aclKey{username: "alice", access: Read, topic: "sensors/t"}
		for i := range st.aclCache.shards {
			s := &st.aclCache.shards[i]
			for h, e := range s.m {
				if e.v.key == k {
					e.v.allowed = false // poison the cached answer
					s.m[h] = e
				}
			}
		}
		if f.Authorize(alice, Read, "sensors/t") {
			t.Fatal("a cached decision was not used")
		}
		clock.advance(DefaultCacheTTL)
		if f.Authorize(alice, Read, "sensors/t") {
			t.Fatal("the coarse clock advanced without a miss")
		}
		f.Authorize(alice, Read, "sensors/miss") // a miss reads the clock
		if !f.Authorize(alice, Read, "sensors/t") {
			t.Fatal("an expired decision was used")
		}
	})
	t.Run("small rule sets are not cached", func(t *testing.T) {
		f, err := NewFile(FileOptions{ACLFile: writeFile(t, dir, "small", "user bob\ntopic read bob/#\n")})
		if err != nil {
			t.Fatal(err)
		}
		if !f.Authorize(bob, Read, "bob/x") || f.Authorize(bob, Read, "alice/x") {
			t.Fatal("wrong decision")
		}
		if n := f.state.Load().aclCache.len(); n != 0 {
			t.Fatalf("cache holds %d entries, want 0", n)
		}
	})
	t.Run("no ACL file allows everything", func(t *testing.T) {
		f, err := NewFile(FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !f.Authorize(alice, Write, "$SYS/x") {
			t.Fatal("Authorize without an ACL file = false, want true")
		}
	})
}

func TestFileAuthorizeClientIDKey(t *testing.T) {
	dir := t.TempDir()
	var acl strings.Builder
	for i := range 10 {
		fmt.Fprintf(&acl, "pattern read p%d/%%c/#\n", i)
	}
	f, err := NewFile(FileOptions{ACLFile: writeFile(t, dir, "acl", acl.String())})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		c := &Client{ClientID: id}
		if !f.Authorize(c, Read, "p3/"+id+"/x") || f.Authorize(c, Read, "p3/z/x") {
			t.Fatalf("client %s: wrong decision", id)
		}
	}
	ds := f.state.Load().aclCache.values()
	for _, d := range ds {
		if d.key.clientID == "" {
			t.Errorf("key %+v has no client id but a pattern uses %%c", d.key)
		}
	}
	if n := len(ds); n != 4 {
		t.Errorf("cache holds %d decisions, want 4", n)
	}
}

func TestFileReload(t *testing.T) {
	dir := t.TempDir()
	pw := writeFile(t, dir, "pw", hashLine(t, "alice", "a")+hashLine(t, "bob", "b"))
	acl := writeFile(t, dir, "acl", "user alice\ntopic read x/#\n")
	var logs bytes.Buffer
	f, err := NewFile(FileOptions{PasswordFile: pw, ACLFile: acl, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	alice := &Client{ClientID: "1", Username: "alice"}
	if f.Generation() != 1 || !f.UserExists("bob") || f.UserExists("") {
		t.Fatal("wrong state after NewFile")
	}
	if err := f.Authenticate(ctx, creds("bob", "b")); err != nil {
		t.Fatal(err)
	}
	if !f.Authorize(alice, Read, "x/1") {
		t.Fatal("alice cannot read x/1")
	}
	t.Run("malformed password file keeps the old files", func(t *testing.T) {
		writeFile(t, dir, "pw", hashLine(t, "alice", "a")+"bob:$argon2id$v=19$x\n")
		err := f.Reload()
		var pe *ParseError
		if !errors.As(err, &pe) || pe.File != pw || pe.Line != 2 {
			t.Fatalf("Reload = %v, want %s:2", err, pw)
		}
		if f.Generation() != 1 || f.Authenticate(ctx, creds("bob", "b")) != nil {
			t.Fatal("a failed reload changed the loaded files")
		}
	})
	t.Run("malformed ACL file keeps the old files", func(t *testing.T) {
		writeFile(t, dir, "pw", hashLine(t, "alice", "a"))
		writeFile(t, dir, "acl", "user alice\ntopic read x/#\ntopic bogus y\n")
		if err := f.Reload(); err == nil || !strings.Contains(err.Error(), acl+":3:") {
			t.Fatalf("Reload = %v, want %s:3", err, acl)
		}
		if f.Generation() != 1 || !f.UserExists("bob") {
			t.Fatal("a failed reload changed the loaded files")
		}
	})
	t.Run("missing file", func(t *testing.T) {
		os.Rename(acl, acl+".gone")
		defer os.Rename(acl+".gone", acl)
		if err := f.Reload(); !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "acl file") {
			t.Fatalf("Reload = %v, want a not-exist error naming the acl file", err)
		}
	})
	t.Run("success swaps files and drops caches", func(t *testing.T) {
		writeFile(t, dir, "acl", "user alice\ntopic read y/#\nuser carol\ntopic read #\npattern read no-subst\n")
		if err := f.Reload(); err != nil {
			t.Fatal(err)
		}
		if f.Generation() != 2 {
			t.Fatalf("Generation = %d, want 2", f.Generation())
		}
		if f.UserExists("bob") || !f.UserExists("alice") {
			t.Fatal("bob is still valid after being removed")
		}
		if err := f.Authenticate(ctx, creds("bob", "b")); err != ErrBadCredentials {
			t.Fatalf("removed user: Authenticate = %v, want ErrBadCredentials (cache dropped)", err)
		}
		if f.Authorize(alice, Read, "x/1") || !f.Authorize(alice, Read, "y/1") {
			t.Fatal("the new rules do not apply")
		}
		for _, want := range []string{"auth files loaded", "generation=2", "acl file names a user the password file does not have", "username=carol", "no %c or %u"} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, logs.String())
			}
		}
	})
	t.Run("missing password file at start", func(t *testing.T) {
		if _, err := NewFile(FileOptions{PasswordFile: filepath.Join(dir, "nope")}); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("NewFile = %v, want a not-exist error", err)
		}
	})
}

// TestFileConcurrent runs checks and reloads together; run with -race.
func TestFileConcurrent(t *testing.T) {
	dir := t.TempDir()
	pw := writeFile(t, dir, "pw", hashLine(t, "alice", "a"))
	var acl strings.Builder
	acl.WriteString("user alice\n")
	for i := range 30 {
		fmt.Fprintf(&acl, "topic read t/%d/#\n", i)
	}
	aclPath := writeFile(t, dir, "acl", acl.String())
	f, err := NewFile(FileOptions{PasswordFile: pw, ACLFile: aclPath, ACLCacheSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 8 {
		wg.Go(func() {
			c := &Client{ClientID: fmt.Sprint("c", g), Username: "alice"}
			for i := range 500 {
				if !f.Authorize(c, Read, fmt.Sprintf("t/%d/x", i%30)) {
					errs <- fmt.Errorf("goroutine %d: t/%d/x denied", g, i%30)
					return
				}
				if i%100 == 0 {
					if err := f.Authenticate(context.Background(), creds("alice", "a")); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if err := f.Reload(); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestFileCacheHitAllocs proves that the hot paths allocate nothing once cached.
func TestFileCacheHitAllocs(t *testing.T) {
	f, small := benchFile(t, 100), benchFile(t, 2)
	c := &Client{ClientID: "dev-7", Username: "user"}
	cr := creds("user", "pass")
	tests := []struct {
		name string
		fn   func()
	}{
		{"Authorize cached", func() { f.Authorize(c, Read, "site/3/sensor/7") }},
		{"Authorize cached subscribe", func() { f.Authorize(c, Read, "site/3/+/7") }},
		{"Authorize uncached", func() { small.Authorize(c, Read, "site/3/sensor/7") }},
		{"Authenticate cached", func() { f.Authenticate(context.Background(), cr) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn() // fill the cache
			if n := testing.AllocsPerRun(100, tt.fn); n != 0 {
				t.Fatalf("%v allocations per call, want 0", n)
			}
		})
	}
}

// benchFile returns a File with the mosquitto_passwd user "user" (password "pass", 101
// iterations) and an ACL of rules rules for that user.
func benchFile(tb testing.TB, rules int) *File {
	tb.Helper()
	dir := tb.TempDir()
	pw := writeFile(tb, dir, "pw", mosquittoLine+"\n")
	var acl strings.Builder
	acl.WriteString("topic read open/#\nuser user\n")
	for i := range rules - 1 {
		fmt.Fprintf(&acl, "topic read site/%d/other/%d\n", i, i)
	}
	acl.WriteString("topic read site/+/sensor/#\n") // the rule that matches comes last
	f, err := NewFile(FileOptions{PasswordFile: pw, ACLFile: writeFile(tb, dir, "acl", acl.String())})
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

func BenchmarkAuthenticateCached(b *testing.B) {
	f := benchFile(b, 1)
	c := creds("user", "pass")
	ctx := context.Background()
	if err := f.Authenticate(ctx, c); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if f.Authenticate(ctx, c) != nil {
			b.Fatal("refused")
		}
	}
}

// BenchmarkAuthenticateUncached verifies Mosquitto's default $7$ hash (101 iterations) each time.
func BenchmarkAuthenticateUncached(b *testing.B) {
	dir := b.TempDir()
	f, err := NewFile(FileOptions{PasswordFile: writeFile(b, dir, "pw", mosquittoLine+"\n"), CacheTTL: -1})
	if err != nil {
		b.Fatal(err)
	}
	c := creds("user", "pass")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if f.Authenticate(ctx, c) != nil {
			b.Fatal("refused")
		}
	}
}

func BenchmarkAuthorizeCached(b *testing.B) {
	f := benchFile(b, 100)
	c := &Client{ClientID: "dev-7", Username: "user"}
	f.Authorize(c, Read, "site/3/sensor/7")
	b.ReportAllocs()
	for b.Loop() {
		if !f.Authorize(c, Read, "site/3/sensor/7") {
			b.Fatal("denied")
		}
	}
}

// BenchmarkAuthorizeCachedParallel is the delivery path: many event loops checking one topic
// for clients of one user.
func BenchmarkAuthorizeCachedParallel(b *testing.B) {
	f := benchFile(b, 100)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		c := &Client{ClientID: fmt.Sprintf("dev-%p", pb), Username: "user"}
		for pb.Next() {
			if !f.Authorize(c, Read, "site/3/sensor/7") {
				b.Error("denied")
				return
			}
		}
	})
}

func BenchmarkAuthorizeUncached(b *testing.B) {
	for _, rules := range []int{1, 4, 8, 100} {
		b.Run(fmt.Sprint(rules, "rules"), func(b *testing.B) {
			f := benchFile(b, rules)
			f.state.Load().aclCache = nil // evaluate every time
			c := &Client{ClientID: "dev-7", Username: "user"}
			b.ReportAllocs()
			for b.Loop() {
				if !f.Authorize(c, Read, "site/3/sensor/7") {
					b.Fatal("denied")
				}
			}
		})
	}
}
