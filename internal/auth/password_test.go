package auth

import (
	"errors"
	"strings"
	"testing"
)

// Vectors made outside Go: the first line by Debian's mosquitto_passwd 2.0.11 (password "pass"),
// the others with Python's hashlib (salt bytes 1..12).
const (
	mosquittoLine = "user:$7$101$pZ172ylxKeOGXrq/$mEyrt8bhTOf11+BH6gjSzOd1TwdYafs6bZd/aEBaVmI+eNlaEKbL/bJ+OwdVNXgTBO64wLDhQAnqN9eFpFce3g=="
	sha512Hash    = "$6$AQIDBAUGBwgJCgsM$S0QHkjpkvtUsxmMOtsu5t2SVnAvyhCIScUsV0AOs3QSWZm8gdwUZHyp8NoB4guBGduqelpvHIWIjFXB2Gjq2fQ=="      // "secret6"
	pbkdf2Hash    = "$7$1000$AQIDBAUGBwgJCgsM$/aJUQVzqoQUiAwZdarRwTEIey2jOQUL4uPCIeiq/SRIsvfOSFvgaSUgEUNwqvmnrhxwT9vbuK2Px7gRYHkw1fw==" // "secret7"
	shortHash     = "$7$5$AQIDBAUGBwgJCgsM$8ei+T46CB8XdHHQywAkjEey6FEcf/vv65XQ2zsB7wTM="                                                // "short", 32-byte key
)

func TestParseAndVerifyHash(t *testing.T) {
	tests := []struct {
		name, hash, good, bad string
	}{
		{"mosquitto_passwd $7$", strings.TrimPrefix(mosquittoLine, "user:"), "pass", "Pass"},
		{"$6$ salted sha512", sha512Hash, "secret6", "secret7"},
		{"$6$ unpadded base64", strings.TrimRight(sha512Hash, "="), "secret6", ""},
		{"$7$ 1000 iterations", pbkdf2Hash, "secret7", "secret6"},
		{"$7$ 32-byte key", shortHash, "short", "shor"},
		{"$7$ unpadded", strings.TrimRight(shortHash, "="), "short", "shorts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := parseHash(tt.hash)
			if err != nil {
				t.Fatalf("parseHash: %v", err)
			}
			if !h.verify([]byte(tt.good)) {
				t.Errorf("verify(%q) = false, want true", tt.good)
			}
			if h.verify([]byte(tt.bad)) {
				t.Errorf("verify(%q) = true, want false", tt.bad)
			}
		})
	}
}

func TestParseHashErrors(t *testing.T) {
	salt, sum64 := "AQIDBAUGBwgJCgsM", strings.Repeat("A", 86)
	tests := []struct{ name, hash, want string }{
		{"no dollar", "plaintext", "does not start with '$'"},
		{"argon2id", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA", "unsupported password hash type $argon2id$"},
		{"sha512-crypt rounds", "$5$rounds=5000$salt$hash", "unsupported"},
		{"$6$ missing hash", "$6$" + salt, "malformed $6$"},
		{"$6$ extra field", "$6$" + salt + "$" + sum64 + "$x", "malformed $6$"},
		{"$7$ missing iterations", "$7$" + salt + "$" + sum64, "malformed $7$"},
		{"$7$ zero iterations", "$7$0$" + salt + "$" + sum64, "bad $7$ iteration count"},
		{"$7$ text iterations", "$7$many$" + salt + "$" + sum64, "bad $7$ iteration count"},
		{"$7$ huge iterations", "$7$99999999999$" + salt + "$" + sum64, "bad $7$ iteration count"},
		{"bad salt base64", "$6$@@@@$" + sum64, "bad salt"},
		{"empty salt", "$6$$" + sum64, "bad salt length 0"},
		{"bad hash base64", "$6$" + salt + "$!!!", "bad hash"},
		{"$6$ short hash", "$6$" + salt + "$" + strings.Repeat("A", 40), "bad $6$ hash length"},
		{"$7$ short key", "$7$10$" + salt + "$AAAA", "bad $7$ hash length 3"},
		{"$7$ huge key", "$7$10$" + salt + "$" + strings.Repeat("A", 400), "bad $7$ hash length"},
		{"long salt", "$6$" + strings.Repeat("A", 2000) + "$" + sum64, "bad salt length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseHash(tt.hash)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parseHash(%q) error = %v, want containing %q", tt.hash, err, tt.want)
			}
		})
	}
}

func TestVerifyUnknownKind(t *testing.T) {
	h := passwordHash{kind: 9, salt: []byte{1}, sum: make([]byte, 64)}
	if h.verify(nil) {
		t.Fatal("verify with an unknown kind = true, want false")
	}
}

func TestHashPassword(t *testing.T) {
	tests := []struct {
		name       string
		iterations int
		wantPrefix string
	}{
		{"default", 0, "$7$101$"},
		{"custom", 1000, "$7$1000$"},
		{"one", 1, "$7$1$"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := HashPassword([]byte("hunter2"), tt.iterations)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(s, tt.wantPrefix) {
				t.Fatalf("HashPassword = %q, want prefix %q", s, tt.wantPrefix)
			}
			h, err := parseHash(s)
			if err != nil {
				t.Fatalf("parseHash(HashPassword) = %v", err)
			}
			if len(h.salt) != 12 || len(h.sum) != 64 {
				t.Errorf("salt %d bytes, key %d bytes, want 12 and 64 (Mosquitto's sizes)", len(h.salt), len(h.sum))
			}
			if !h.verify([]byte("hunter2")) || h.verify([]byte("hunter3")) {
				t.Error("the hash does not verify its own password only")
			}
		})
	}
	t.Run("salted", func(t *testing.T) {
		a, _ := HashPassword([]byte("x"), 1)
		b, _ := HashPassword([]byte("x"), 1)
		if a == b {
			t.Fatal("two hashes of one password are equal: the salt is not random")
		}
	})
	for _, tt := range []struct {
		name       string
		password   []byte
		iterations int
	}{
		{"negative iterations", []byte("x"), -1},
		{"too many iterations", []byte("x"), MaxIterations + 1},
		{"password too long", make([]byte, MaxPasswordLen+1), 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := HashPassword(tt.password, tt.iterations); err == nil {
				t.Fatal("HashPassword succeeded, want an error")
			}
		})
	}
}

func TestValidateUsername(t *testing.T) {
	tests := []struct {
		name, user string
		ok         bool
	}{
		{"plain", "alice", true},
		{"unicode", "zoë-κ", true},
		{"inner space", "a b", true},
		{"MQTT-1.5.3-1 invalid UTF-8", "a\xffb", false},
		{"MQTT-1.5.3-2 NUL", "a\x00b", false},
		{"empty", "", false},
		{"colon", "a:b", false},
		{"newline", "a\nb", false},
		{"tab", "a\tb", false},
		{"leading space", " a", false},
		{"trailing space", "a ", false},
		{"comment", "#a", false},
		{"too long", strings.Repeat("a", 65536), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateUsername(tt.user)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateUsername(%q) = %v, want ok=%v", tt.user, err, tt.ok)
			}
		})
	}
}

func TestParsePasswords(t *testing.T) {
	good := "# users\n\n" + mosquittoLine + "\r\n  bob : " + sha512Hash + "  \n\t# indented comment\ncarol:" + pbkdf2Hash
	users, err := parsePasswords("pw", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 3 || users["user"] == nil || users["bob"] == nil || users["carol"] == nil {
		t.Fatalf("users = %v, want user, bob and carol", users)
	}
	if !users["bob"].verify([]byte("secret6")) {
		t.Error("bob's $6$ hash does not verify")
	}

	tests := []struct {
		name, data string
		line       int
		want       string
	}{
		{"no colon", "alice " + sha512Hash, 1, "missing ':'"},
		{"empty username", "# c\n:" + sha512Hash, 2, "empty username"},
		{"no hash", "alice:", 1, "no password hash"},
		{"duplicate", "a:" + sha512Hash + "\na:" + sha512Hash, 2, `"a" listed twice`},
		{"unknown format", "\n\nalice:$argon2id$v=19$x$y", 3, "unsupported password hash type"},
		{"bad UTF-8", "a\xff:" + sha512Hash, 1, "not valid UTF-8"},
		{"plain text", "alice:secret", 1, "does not start with '$'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parsePasswords("pw", []byte(tt.data))
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error = %v, want a *ParseError", err)
			}
			if pe.File != "pw" || pe.Line != tt.line || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %q, want pw:%d: ...%s...", err, tt.line, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "pw:") || errors.Unwrap(err) == nil {
				t.Errorf("error %q does not start with the file name or does not wrap", err)
			}
			if ValidatePasswordFile("pw", []byte(tt.data)) == nil {
				t.Error("ValidatePasswordFile = nil, want the same error")
			}
		})
	}
	if err := ValidatePasswordFile("pw", []byte(good)); err != nil {
		t.Errorf("ValidatePasswordFile(good) = %v", err)
	}
}
