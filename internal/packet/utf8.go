package packet

import (
	"bytes"
	"unicode/utf8"
)

// ValidateUTF8 reports whether b is a well-formed MQTT UTF-8 string: valid
// UTF-8 without surrogate code points ([MQTT-1.5.3-1]) and without U+0000
// ([MQTT-1.5.3-2]). A byte order mark is valid and stays in the string as
// U+FEFF ([MQTT-1.5.3-3]). The error is an *Error; on success it does not
// allocate.
//
// The control characters and non-characters that 1.5.3 says a sender
// SHOULD NOT use are accepted: a receiver only MAY close on them.
func ValidateUTF8(b []byte) error {
	if stmt, msg := checkUTF8(b); stmt != "" {
		return &Error{Statement: stmt, Msg: "string: " + msg}
	}
	return nil
}

// checkUTF8 returns the statement b violates and a short reason, or two
// empty strings when b is a valid MQTT string.
func checkUTF8(b []byte) (stmt, msg string) {
	// utf8.Valid already rejects encoded surrogates (U+D800..U+DFFF) and
	// overlong forms, so an overlong NUL (C0 80) cannot slip past the
	// U+0000 check below.
	if !utf8.Valid(b) {
		return "MQTT-1.5.3-1", "ill-formed utf-8"
	}
	// In valid UTF-8 a zero byte can only be U+0000.
	if bytes.IndexByte(b, 0) >= 0 {
		return "MQTT-1.5.3-2", "contains U+0000"
	}
	return "", ""
}

// utf8Field checks a string field of packet t; on failure the error carries
// stmt, the statement that says this field is a UTF-8 string, and the
// message names the field and the 1.5.3 rule it breaks.
func utf8Field(t Type, field, stmt string, b []byte) error {
	if s, msg := checkUTF8(b); s != "" {
		return &Error{Statement: stmt, Msg: t.field() + ": " + field + ": " + msg + " (" + s + ")"}
	}
	return nil
}
