// Package config is the schema of the IoTD TOML configuration file: its
// defaults, its decoding and its validation.
//
// It holds plain data only. Nothing here opens a socket or starts a
// goroutine; cmd/iotd turns a Config into listeners, a broker and a server.
//
// # Basics
//
// [Default] returns a Config that works with no file at all: one plain TCP
// listener on 0.0.0.0:1883 and the limits documented on each field.
// [Parse] lays a TOML document over those defaults, so a file only needs the
// keys it changes, and then calls [Config.Validate]. [Load] does the same for
// a file on disk.
//
// A few keys are optional in a stronger sense: their default depends on
// other keys, so the code must tell "not set" from false. Those fields are
// pointers, nil unless the file sets them, and a method gives the effective
// value: [Config.AnonymousAllowed] for the allow_anonymous keys.
//
// # Errors
//
// Configuration mistakes are reported all at once rather than one per run:
// the error returned by Parse, Load and Validate joins (errors.Join) one
// [*FieldError] per problem, each naming the key path it is about, such as
// "limits.max_packet_size" or "listener[1].address", and, for unknown keys
// and values of the wrong TOML type, the line of the file when it is known.
// Unknown keys are errors because a misspelt key that is silently ignored
// leaves the broker running with a default the operator meant to change.
//
// Two errors are not a *FieldError: a file that cannot be read, and a TOML
// syntax error. The latter stops decoding at once, since nothing after it
// can be read reliably, and gives the line and column instead of a key.
package config
