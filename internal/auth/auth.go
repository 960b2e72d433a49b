// Package auth declares how the broker asks whether a client may connect, publish and subscribe.
//
// The broker calls an Authenticator once per CONNECT and an Authorizer for every SUBSCRIBE filter,
// every PUBLISH it receives and every message it is about to deliver. Both are small interfaces so
// that file, HTTP or JWT backends can be added below this package without touching the broker. A nil
// Authenticator or Authorizer in the broker's options means "allow everything": what cmd/iotd
// passes when no password file, ACL file or listener restriction is configured.
//
// # File backend
//
// File reads Mosquitto's files, so that a deployment moves over with them unchanged: the password
// file of mosquitto_passwd (and `iotd passwd`), "username:hash" lines with hashes in Mosquitto's $7$
// (PBKDF2-HMAC-SHA512) or older $6$ (one salted SHA-512) format, and the acl_file, whose lines are
//
//	topic [read|write|readwrite|deny] FILTER    before any user line: clients without a username
//	user USERNAME                               the topic lines below apply to this user
//	pattern [read|write|readwrite|deny] FILTER  every client; %c is its client id, %u its username
//
// The access word defaults to readwrite; lines starting with '#' are comments.
//
// An access request is granted when some applicable rule grants it and no applicable deny rule
// matches; a deny wins wherever it is in the file. Rules match topic names the MQTT way, except
// that a rule starting with a wildcard never matches a topic starting with '$' ([MQTT-4.7.2-1]), so
// $SYS is readable only through a rule that names it. A SUBSCRIBE filter is granted when the rule
// covers all of it (`sensors/#` grants `sensors/+/t`, not `#`), and a deny rule refuses it only
// when it covers all of it too; the broker also checks every delivery, so a wildcard subscription
// never delivers a denied topic. A pattern does not apply to a client whose substituted client id
// or username contains '/', '+' or '#' (it would reach other clients' topics); a deny pattern in
// that case refuses the client everything. Without a username a client gets the rules before the
// first user line and the patterns without %u. With no rule file there is no Authorizer and
// everything is allowed; an empty rule file denies everything.
//
// Reload re-reads both files and keeps the old ones if either is malformed; the caller then asks
// about its connected clients (UserExists, through broker.Revalidate).
package auth

import (
	"context"
	"errors"
)

// ErrBadCredentials is returned by an Authenticator when the username or password is wrong
// (CONNACK 0x04 in MQTT 3.1.1).
var ErrBadCredentials = errors.New("auth: bad username or password")

// ErrNotAuthorized is returned by an Authenticator when the client is known but may not connect
// (CONNACK 0x05 in MQTT 3.1.1).
var ErrNotAuthorized = errors.New("auth: not authorized")

// Client identifies a connected client to an Authorizer. It is kept for the life of the connection,
// so it holds only what authorization needs.
type Client struct {
	ClientID string // the client identifier from CONNECT (or the one the server assigned)
	Username string // empty when the client sent none
}

// Credentials are what a client presents in CONNECT, and where it came from.
type Credentials struct {
	Client
	Listener    string // name of the listener the connection arrived on
	RemoteAddr  string // the peer's address, host:port
	HasUsername bool   // the username flag of CONNECT
	Password    []byte // the password; nil when HasPassword is false
	HasPassword bool   // the password flag of CONNECT
	// FromCertificate is true when Username is the identity of a TLS client certificate that the
	// listener verified against its CA: the certificate is the credential, there may be no password.
	FromCertificate bool
}

// Authenticator decides whether a CONNECT may proceed.
type Authenticator interface {
	// Authenticate returns nil to accept the client, ErrBadCredentials or ErrNotAuthorized to
	// refuse it with the matching CONNACK code; any other error refuses it as "server unavailable".
	// It may block (ctx bounds it) and must be safe for concurrent use.
	Authenticate(ctx context.Context, c *Credentials) error
}

// Access is the kind of access a client asks for on a topic.
type Access byte

const (
	// Read is the right to receive messages published to a topic (checked on SUBSCRIBE filters and
	// on every delivery).
	Read Access = 1 << iota
	// Write is the right to publish to a topic.
	Write
)

// String returns "read" or "write".
func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Write:
		return "write"
	}
	return "unknown"
}

// Authorizer decides whether a client may read or write a topic (a name, or a filter on SUBSCRIBE).
// It is called on hot paths, so implementations should answer from memory and must be safe for
// concurrent use.
type Authorizer interface {
	Authorize(c *Client, a Access, topic string) bool
}
