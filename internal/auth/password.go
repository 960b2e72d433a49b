package auth

import (
	"bytes"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// DefaultIterations is the PBKDF2 iteration count HashPassword uses when given 0. It is Mosquitto
// 2.0's default, so a migrated deployment pays the same CPU per uncached login as before. A higher
// count makes an offline guess at a stolen file proportionally slower, and every login that misses
// the cache slower by the same factor; successful logins are cached (FileOptions.CacheTTL), so
// clients that reconnect often pay it once per TTL.
const DefaultIterations = 101

// MaxIterations bounds the iteration count of a $7$ hash, so that a typing error in a password
// file cannot stall the connection path for minutes per login. It is about five times Mosquitto
// 2.1's default (210,000) and costs about a second per uncached login.
const MaxIterations = 1_000_000

// MaxPasswordLen is the longest password MQTT can carry (a two-byte length prefix).
const MaxPasswordLen = 65535

const (
	saltLen   = 12 // bytes of salt HashPassword draws, as mosquitto_passwd does
	pbkdf2Len = 64 // bytes of derived key HashPassword stores, the SHA-512 size, as Mosquitto does
	// minHashLen and maxHashLen bound the stored key of a $7$ hash: shorter keys are too easy to
	// collide with, longer ones buy nothing and cost a PBKDF2 block per 64 bytes.
	minHashLen = 16
	maxHashLen = 256
	maxSaltLen = 1024
)

// hashKind is the scheme of a stored password hash, named by its Mosquitto prefix.
type hashKind byte

const (
	kindSHA512 hashKind = 6 // $6$: one SHA-512 over password then salt (Mosquitto before 2.0)
	kindPBKDF2 hashKind = 7 // $7$: PBKDF2-HMAC-SHA512 (Mosquitto 2.0 and later)
)

// passwordHash is one decoded hash from a password file.
type passwordHash struct {
	kind       hashKind
	iterations int // $7$ only
	salt       []byte
	sum        []byte
}

// decodeBase64 accepts standard base64 with or without its '=' padding: mosquitto_passwd pads,
// other tools that write the same format do not always.
func decodeBase64(s string) ([]byte, error) {
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// parseHash decodes the hash field of a password file line.
func parseHash(s string) (passwordHash, error) {
	var h passwordHash
	fields := strings.Split(s, "$")
	if len(fields) < 2 || fields[0] != "" {
		return h, errors.New("password hash does not start with '$'")
	}
	switch fields[1] {
	case "6":
		if len(fields) != 4 {
			return h, errors.New("malformed $6$ hash: want $6$<salt>$<hash>")
		}
		h.kind = kindSHA512
		fields = fields[2:]
	case "7":
		if len(fields) != 5 {
			return h, errors.New("malformed $7$ hash: want $7$<iterations>$<salt>$<hash>")
		}
		h.kind = kindPBKDF2
		n, err := strconv.Atoi(fields[2])
		if err != nil || n < 1 || n > MaxIterations {
			return h, fmt.Errorf("bad $7$ iteration count %q: want 1 to %d", fields[2], MaxIterations)
		}
		h.iterations = n
		fields = fields[3:]
	default:
		return h, fmt.Errorf("unsupported password hash type $%s$: want $6$ or $7$ (mosquitto_passwd)", fields[1])
	}
	var err error
	if h.salt, err = decodeBase64(fields[0]); err != nil {
		return h, fmt.Errorf("bad salt: %w", err)
	}
	if len(h.salt) == 0 || len(h.salt) > maxSaltLen {
		return h, fmt.Errorf("bad salt length %d: want 1 to %d bytes", len(h.salt), maxSaltLen)
	}
	if h.sum, err = decodeBase64(fields[1]); err != nil {
		return h, fmt.Errorf("bad hash: %w", err)
	}
	switch {
	case h.kind == kindSHA512 && len(h.sum) != sha512.Size:
		return h, fmt.Errorf("bad $6$ hash length %d: want %d bytes", len(h.sum), sha512.Size)
	case h.kind == kindPBKDF2 && (len(h.sum) < minHashLen || len(h.sum) > maxHashLen):
		return h, fmt.Errorf("bad $7$ hash length %d: want %d to %d bytes", len(h.sum), minHashLen, maxHashLen)
	}
	return h, nil
}

// verify reports whether password hashes to h. It compares in constant time so that the time
// taken does not tell an attacker how much of a guess was right.
func (h *passwordHash) verify(password []byte) bool {
	var sum []byte
	switch h.kind {
	case kindSHA512:
		d := sha512.New()
		d.Write(password)
		d.Write(h.salt)
		sum = d.Sum(make([]byte, 0, sha512.Size))
	case kindPBKDF2:
		var err error
		sum, err = pbkdf2.Key(sha512.New, string(password), h.salt, h.iterations, len(h.sum))
		if err != nil {
			return false
		}
	default:
		return false
	}
	return subtle.ConstantTimeCompare(sum, h.sum) == 1
}

// HashPassword returns password hashed in Mosquitto's $7$ format (PBKDF2-HMAC-SHA512, a random
// 12-byte salt and a 64-byte key, both in padded standard base64), the hash field of a password
// file line. iterations 0 means DefaultIterations.
func HashPassword(password []byte, iterations int) (string, error) {
	if iterations == 0 {
		iterations = DefaultIterations
	}
	if iterations < 1 || iterations > MaxIterations {
		return "", fmt.Errorf("iteration count %d out of range 1 to %d", iterations, MaxIterations)
	}
	if len(password) > MaxPasswordLen {
		return "", fmt.Errorf("password longer than %d bytes", MaxPasswordLen)
	}
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	sum, err := pbkdf2.Key(sha512.New, string(password), salt, iterations, pbkdf2Len)
	if err != nil {
		return "", fmt.Errorf("pbkdf2: %w", err)
	}
	return "$7$" + strconv.Itoa(iterations) + "$" + base64.StdEncoding.EncodeToString(salt) + "$" +
		base64.StdEncoding.EncodeToString(sum), nil
}

// ValidateUsername reports why name cannot be stored in a password file, or nil. A username must
// be non-empty valid UTF-8 of at most 65535 bytes ([MQTT-1.5.3-1], [MQTT-3.1.3-11]) without ':'
// (the field separator), control characters (a newline would start another line; U+0000 is
// forbidden by [MQTT-1.5.3-2]), leading or trailing white space (the loader trims it), or a
// leading '#' (the line would be read as a comment).
func ValidateUsername(name string) error {
	switch {
	case name == "":
		return errors.New("username is empty")
	case len(name) > 65535:
		return errors.New("username longer than 65535 bytes")
	case !utf8.ValidString(name):
		return errors.New("username is not valid UTF-8")
	case strings.ContainsRune(name, ':'):
		return errors.New("username contains ':'")
	case strings.IndexFunc(name, unicode.IsControl) >= 0:
		return errors.New("username contains a control character")
	case strings.TrimSpace(name) != name:
		return errors.New("username starts or ends with white space")
	case name[0] == '#':
		return errors.New("username starts with '#'")
	}
	return nil
}

// ParseError is a malformed line in a password or ACL file.
type ParseError struct {
	File string // the file's name as given in FileOptions
	Line int    // 1-based line number
	Err  error  // what is wrong with the line
}

// Error returns "file:line: what".
func (e *ParseError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

// Unwrap returns the underlying error.
func (e *ParseError) Unwrap() error { return e.Err }

// lines calls fn with each line of data (without its end-of-line bytes and with surrounding
// blanks trimmed) and its 1-based number, skipping blank lines and '#' comments, and stops at the
// first error.
func lines(name string, data []byte, fn func(line string) error) error {
	for n := 1; len(data) > 0; n++ {
		var raw []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			raw, data = data[:i], data[i+1:]
		} else {
			raw, data = data, nil
		}
		line := strings.TrimSpace(string(raw))
		if line == "" || line[0] == '#' {
			continue
		}
		if err := fn(line); err != nil {
			return &ParseError{File: name, Line: n, Err: err}
		}
	}
	return nil
}

// parsePasswords decodes a mosquitto_passwd file: "username:hash" lines, blank lines and '#'
// comments. Unlike Mosquitto, which logs and skips a line it cannot use, any such line is an error,
// so that a user never silently disappears.
func parsePasswords(name string, data []byte) (map[string]*passwordHash, error) {
	users := make(map[string]*passwordHash)
	err := lines(name, data, func(line string) error {
		user, hash, ok := strings.Cut(line, ":")
		if !ok {
			return errors.New("missing ':' between username and password hash")
		}
		user, hash = strings.TrimSpace(user), strings.TrimSpace(hash)
		if user == "" {
			return errors.New("empty username")
		}
		if !utf8.ValidString(user) {
			return errors.New("username is not valid UTF-8")
		}
		if _, dup := users[user]; dup {
			return fmt.Errorf("user %q listed twice", user)
		}
		if hash == "" {
			return fmt.Errorf("user %q has no password hash", user)
		}
		h, err := parseHash(hash)
		if err != nil {
			return fmt.Errorf("user %q: %w", user, err)
		}
		users[user] = &h
		return nil
	})
	if err != nil {
		return nil, err
	}
	return users, nil
}

// ValidatePasswordFile returns the error loading data as the password file name would give, or
// nil. `iotd passwd` uses it to refuse writing a file the broker could not load.
func ValidatePasswordFile(name string, data []byte) error {
	_, err := parsePasswords(name, data)
	return err
}
