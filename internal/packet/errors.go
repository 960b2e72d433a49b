package packet

import (
	"errors"
	"fmt"
)

// Error is a malformed packet or protocol violation found while decoding.
// The server closes the connection on any *Error; when Code is non-zero it
// first answers with a CONNACK carrying Code.
type Error struct {
	// Code is non-zero only for CONNECT errors the server must answer with
	// a CONNACK carrying this code before closing (e.g.
	// RefusedProtocolVersion); zero means close without answering.
	Code ConnackCode
	// Statement is the MQTT statement ID the input violates, e.g.
	// "MQTT-3.1.2-1"; it is empty when the rule has no number.
	Statement string
	// Msg is lowercase and names the packet and field, e.g.
	// "connect: protocol name: got \"MQTX\", want \"MQTT\"".
	Msg string

	// err is a sentinel this error is an instance of, such as ErrTooLarge.
	err error
}

// Error returns Msg followed by the statement ID in brackets, if any.
func (e *Error) Error() string {
	if e.Statement == "" {
		return e.Msg
	}
	return e.Msg + " [" + e.Statement + "]"
}

// Unwrap returns the sentinel this error is an instance of (ErrTooLarge for
// an oversized packet), or nil.
func (e *Error) Unwrap() error { return e.err }

// ErrIncomplete means the input ends before the packet does: more bytes are
// needed. It is not a protocol error; the caller keeps the bytes and tries
// again after the next read.
var ErrIncomplete = errors.New("packet: incomplete packet")

// ErrTooLarge means the packet (fixed header plus Remaining Length) exceeds
// the maximum packet size. Decoders return an *Error that wraps it, so test
// with errors.Is.
var ErrTooLarge = errors.New("packet: packet too large")

// newError builds an *Error for statement stmt (may be empty) with a
// formatted message.
func newError(stmt, format string, args ...any) *Error {
	return &Error{Statement: stmt, Msg: fmt.Sprintf(format, args...)}
}

// truncated reports a field whose bytes run past the end of the body.
func truncated(t Type, field string) *Error {
	return &Error{Msg: t.field() + ": " + field + ": truncated"}
}
