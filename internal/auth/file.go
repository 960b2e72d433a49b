package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for FileOptions fields left zero.
const (
	// DefaultCacheTTL is how long logins and ACL decisions are cached.
	DefaultCacheTTL = 5 * time.Minute
	// DefaultAuthCacheSize bounds the cached logins.
	DefaultAuthCacheSize = 10_000
	// DefaultACLCacheSize bounds the cached ACL decisions (about 100 bytes each plus the strings).
	DefaultACLCacheSize = 100_000
)

// aclCacheMinCost is the number of rules from which Authorize consults its cache: when no
// client has this many applicable rules, matching them directly is as fast as a cache lookup
// (BenchmarkAuthorizeCached and BenchmarkAuthorizeUncached).
const aclCacheMinCost = 4

// FileOptions configures a File.
type FileOptions struct {
	// PasswordFile is a mosquitto_passwd file of "username:hash" lines. Empty means no users:
	// then every client, with a username or not, is accepted only when AllowAnonymous is set
	// (as in Mosquitto with no password_file).
	PasswordFile string
	// ACLFile is a Mosquitto acl_file. Empty means Authorize allows everything.
	ACLFile string
	// AllowAnonymous lets clients that send no username connect.
	AllowAnonymous bool
	// CacheTTL is how long a successful login and an ACL decision are remembered; 0 means
	// DefaultCacheTTL, a negative value disables both caches. Caches are dropped on Reload, so
	// the TTL bounds memory and staleness, not correctness.
	CacheTTL time.Duration
	// AuthCacheSize and ACLCacheSize bound the entries of each cache; 0 means
	// DefaultAuthCacheSize and DefaultACLCacheSize.
	AuthCacheSize, ACLCacheSize int
	// Logger receives load results and warnings about the files; nil discards them.
	Logger *slog.Logger
}

// File authenticates clients against a mosquitto_passwd file and authorizes them with a Mosquitto
// acl_file, so that a Mosquitto deployment can move to IoTD with its files unchanged. It
// implements Authenticator and Authorizer, and all its methods are safe for concurrent use.
//
// The loaded files live in an immutable snapshot behind an atomic pointer, together with the
// caches computed from them: checks take no lock but a cache shard's read lock, and Reload swaps
// the whole snapshot, which drops the caches with the rules they were computed from.
type File struct {
	opts  FileOptions
	log   *slog.Logger
	seed  maphash.Seed
	salt  [16]byte // random prefix of the authentication cache keys
	epoch time.Time
	now   func() int64 // nanoseconds since epoch; replaced by tests
	// coarse is the last value read from now. ACL cache hits compare expiry times with it rather
	// than read the clock, which costs more than the rest of a hit on some virtual machines.
	coarse atomic.Int64

	reload sync.Mutex // serializes Reload
	state  atomic.Pointer[fileState]
	gen    atomic.Uint64
}

// fileState is one load of the files. Nothing in it changes after load but the caches' contents.
type fileState struct {
	users     map[string]*passwordHash // nil when there is no password file
	acl       *aclSet                  // nil when there is no ACL file
	cacheACL  bool                     // some client has enough rules that caching pays
	authCache *ttlCache[[sha256.Size]byte, struct{}]
	aclCache  *ttlCache[uint64, aclDecision]
}

// aclDecision is a cached ACL answer, stored under a 64-bit hash of its key. The key is kept to
// tell hash collisions apart: a lookup whose key differs is a miss.
type aclDecision struct {
	key     aclKey
	allowed bool
}

// aclKey identifies a cached ACL decision. clientID is empty when no pattern uses %c, so that all
// of a user's clients share their decisions.
type aclKey struct {
	username, clientID string
	access             Access
	topic              string
}

var (
	_ Authenticator = (*File)(nil)
	_ Authorizer    = (*File)(nil)
)

// NewFile loads the files named in opts. An error names the file and, for a malformed line, the
// line (a *ParseError).
func NewFile(opts FileOptions) (*File, error) {
	if opts.CacheTTL == 0 {
		opts.CacheTTL = DefaultCacheTTL
	}
	if opts.AuthCacheSize <= 0 {
		opts.AuthCacheSize = DefaultAuthCacheSize
	}
	if opts.ACLCacheSize <= 0 {
		opts.ACLCacheSize = DefaultACLCacheSize
	}
	f := &File{opts: opts, log: opts.Logger, seed: maphash.MakeSeed(), epoch: time.Now()}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	rand.Read(f.salt[:]) // never fails (crypto/rand panics rather than return an error)
	f.now = func() int64 { return int64(time.Since(f.epoch)) }
	if err := f.Reload(); err != nil {
		return nil, err
	}
	return f, nil
}

// Reload reads both files again. On success the new users and rules apply to every later check,
// the caches start empty and Generation increases; on error the previous files stay in force and
// the error names the file and line.
//
// Reload does not disconnect anyone: after a successful Reload the caller decides which connected
// clients may stay (cmd/iotd asks UserExists through broker.Revalidate).
func (f *File) Reload() error {
	f.reload.Lock()
	defer f.reload.Unlock()
	st, err := f.load()
	if err != nil {
		return err
	}
	f.state.Store(st)
	gen := f.gen.Add(1)
	attrs := []any{"generation", gen}
	if st.users != nil {
		attrs = append(attrs, "password_file", f.opts.PasswordFile, "users", len(st.users))
	}
	if st.acl != nil {
		attrs = append(attrs, "acl_file", f.opts.ACLFile, "acl_users", len(st.acl.users))
	}
	f.log.Info("auth files loaded", attrs...)
	return nil
}

func (f *File) load() (*fileState, error) {
	st := &fileState{}
	if name := f.opts.PasswordFile; name != "" {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("password file: %w", err)
		}
		if st.users, err = parsePasswords(name, data); err != nil {
			return nil, err
		}
	}
	if name := f.opts.ACLFile; name != "" {
		data, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("acl file: %w", err)
		}
		if st.acl, err = parseACL(name, data); err != nil {
			return nil, err
		}
		for _, w := range st.acl.warnings {
			f.log.Warn("acl file: "+w, "acl_file", name)
		}
		if st.users != nil {
			for u := range st.acl.users {
				if st.users[u] == nil {
					f.log.Warn("acl file names a user the password file does not have", "acl_file", name, "username", u)
				}
			}
		}
	}
	st.cacheACL = st.acl != nil && st.acl.maxCost() >= aclCacheMinCost
	ttl := int64(f.opts.CacheTTL)
	st.authCache = newTTLCache[[sha256.Size]byte, struct{}](f.opts.AuthCacheSize, ttl)
	st.aclCache = newTTLCache[uint64, aclDecision](f.opts.ACLCacheSize, ttl)
	return st, nil
}

// Generation returns the number of successful loads: 1 after NewFile, one more per successful
// Reload. The broker can compare it with the value it saw last to know that the files changed.
func (f *File) Generation() uint64 { return f.gen.Load() }

// UserExists reports whether the password file lists username.
func (f *File) UserExists(username string) bool {
	return f.state.Load().users[username] != nil
}

// dummyHash is verified when a username is unknown, so that the time a refusal takes does not tell
// an attacker which usernames exist.
var dummyHash = passwordHash{kind: kindPBKDF2, iterations: DefaultIterations,
	salt: make([]byte, saltLen), sum: make([]byte, pbkdf2Len)}

// credentialKey is the authentication cache key: a SHA-256 of the File's random salt, username,
// NUL and password, so that the cache never holds a password, and a digest taken from one
// process's memory cannot be looked up in a table computed in advance.
func (f *File) credentialKey(username string, password []byte) [sha256.Size]byte {
	var buf [256]byte
	b := append(buf[:0], f.salt[:]...)
	b = append(b, username...)
	b = append(b, 0)
	b = append(b, password...)
	sum := sha256.Sum256(b)
	clear(b) // leave no copy of the password behind, on the stack or the heap
	return sum
}

// Authenticate implements Authenticator:
//   - no username: accepted when AllowAnonymous, else ErrNotAuthorized (CONNACK 0x05);
//   - no password file: any client is accepted when AllowAnonymous, else ErrNotAuthorized;
//   - unknown user, no password or wrong password: ErrBadCredentials (CONNACK 0x04), the same
//     error for all three so that a client cannot learn which usernames exist.
//
// A successful check is cached for CacheTTL under a hash of the username and password, so a
// reconnecting client costs one SHA-256 rather than a PBKDF2 run.
func (f *File) Authenticate(ctx context.Context, c *Credentials) error {
	st := f.state.Load()
	if !c.HasUsername || st.users == nil {
		if f.opts.AllowAnonymous {
			return nil
		}
		return ErrNotAuthorized
	}
	// A username cannot hold U+0000 ([MQTT-1.5.3-2]); refusing it keeps the cache key unambiguous.
	if !c.HasPassword || strings.IndexByte(c.Username, 0) >= 0 {
		return ErrBadCredentials
	}
	key := f.credentialKey(c.Username, c.Password)
	h := binary.LittleEndian.Uint64(key[:8])
	now := f.tick()
	if _, ok := st.authCache.get(h, key, now); ok {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	stored := st.users[c.Username]
	if stored == nil {
		dummyHash.verify(c.Password)
		return ErrBadCredentials
	}
	if !stored.verify(c.Password) {
		return ErrBadCredentials
	}
	st.authCache.put(h, key, struct{}{}, now)
	return nil
}

// tick reads the clock and records the reading in f.coarse.
func (f *File) tick() int64 {
	n := f.now()
	f.coarse.Store(n)
	return n
}

// clientHash mixes up to the last eight bytes of id with its length: enough to spread the clients
// of one user over the cache shards, and much cheaper than hashing the whole id.
func clientHash(id string) uint64 {
	var v uint64
	for i := max(0, len(id)-8); i < len(id); i++ {
		v = v<<8 | uint64(id[i])
	}
	return (v ^ uint64(len(id))) * 0x9e3779b97f4a7c15
}

// Authorize implements Authorizer with the ACL file's rules (see the package documentation for
// their meaning); it allows everything when no ACL file is configured. topic is a topic name for
// Write and for Read on delivery, a topic filter for Read on SUBSCRIBE.
//
// Decisions are cached per (username, client id if a pattern uses %c, access, topic); a hit
// takes a shard's read lock and allocates nothing. When no client has more than a few applicable
// rules, the rules are matched directly, which is as fast and allocation-free too.
func (f *File) Authorize(c *Client, a Access, topic string) bool {
	st := f.state.Load()
	acl := st.acl
	if acl == nil {
		return true
	}
	if !st.cacheACL || st.aclCache == nil {
		return acl.decide(c, a, topic)
	}
	k := aclKey{username: c.Username, access: a, topic: topic}
	if acl.patternsUseClientID {
		k.clientID = c.ClientID
	}
	// One hash of the whole key, so that the map hashes a uint64 rather than three strings.
	var mh maphash.Hash
	mh.SetSeed(f.seed)
	mh.WriteString(k.topic)
	mh.WriteByte(0)
	mh.WriteString(k.username)
	mh.WriteByte(0)
	mh.WriteString(k.clientID)
	mh.WriteByte(byte(a))
	h := mh.Sum64()
	// The shard follows the client id even when the key leaves it out, so that one topic
	// delivered to many clients of one user spreads over the shards instead of contending on one.
	shard := h ^ clientHash(c.ClientID)
	// A hit compares with the coarse clock, which advances on every miss and every login. While
	// every check hits, a decision can outlive its TTL; it cannot be wrong, since it is a function
	// of the rules it was computed from, which stay loaded until Reload drops the cache.
	if d, hit := st.aclCache.get(shard, h, f.coarse.Load()); hit && d.key == k {
		return d.allowed
	}
	ok := acl.decide(c, a, topic)
	// Copies, so that the cache never pins or aliases a buffer the caller reuses.
	k.username, k.clientID, k.topic = strings.Clone(k.username), strings.Clone(k.clientID), strings.Clone(k.topic)
	st.aclCache.put(shard, h, aclDecision{key: k, allowed: ok}, f.tick())
	return ok
}
