// Package packet is the MQTT wire codec: it frames, decodes and encodes the
// control packets of MQTT 3.1.1 (protocol level 4) and MQTT 3.1 (protocol
// level 3, protocol name "MQIsdp"). MQTT 5.0 will be added behind the same
// API; the version parameter of [Decode] is where it slots in.
//
// # Framing
//
// The broker reads raw bytes from non-blocking sockets into a buffer it owns
// and calls [Frame] over the unread part of that buffer. Frame returns
// [ErrIncomplete] until the buffer holds one whole packet; the caller keeps
// the unfinished tail and calls again after the next read. [ParseFixedHeader]
// rejects a packet larger than the configured maximum as soon as its
// Remaining Length is known, so nobody allocates or waits for a body that
// will be refused anyway. Clients and tests that read from a blocking
// [io.Reader] use [Reader] instead.
//
// # Aliasing
//
// Frame returns the body as a sub-slice of the caller's buffer, with its
// capacity clipped to the packet so an append to it can never overwrite the
// next packet. [DecodePublish] and [Decode] leave [Publish.Topic] and
// [Publish.Payload] pointing into that body: a PUBLISH is decoded without
// allocating, and the bytes stay valid only until the caller reuses the
// buffer. Whoever keeps a message beyond that (retained store, offline
// queue, persistence) copies it once at that point. Every other decoded
// field (strings, CONNECT password and will payload, SUBACK return codes) is
// a copy. [Reader.ReadPacket] copies the PUBLISH topic and payload too,
// because its buffer is reused by the next call.
//
// # Encoding
//
// Every packet type implements [Packet]; its Append method appends the full
// wire encoding, fixed header included, to a slice the caller owns, and
// allocates only when that slice has to grow. [AppendPublishHeader] encodes
// everything of a PUBLISH except the payload, so a fan-out can encode the
// header once per QoS level and share the payload bytes. Append does not
// validate: it assumes strings and binary fields fit in 65,535 bytes and the
// whole packet in [MaxRemainingLength]; packets that came out of Decode
// always do.
//
// # Errors
//
// Decoding fails in one of three ways:
//   - [ErrIncomplete]: more bytes are needed; not a protocol error.
//   - [ErrTooLarge] (test with errors.Is): the packet exceeds the maximum
//     packet size. The returned value is an [*Error] that wraps it.
//   - [*Error]: the input is malformed or violates the protocol. Statement
//     names the normative statement it breaks, when there is one. Code is
//     non-zero only for a CONNECT the server must answer with a CONNACK
//     carrying that return code before it closes the connection
//     ([MQTT-3.1.2-2]); for every other *Error the server closes the
//     connection without answering ([MQTT-4.8.0-1], [MQTT-3.1.4-1]).
//
// Errors are allocated only on the error path, which ends the connection.
//
// # Concurrency
//
// The functions of this package keep no state and are safe for concurrent
// use. A [Reader] is used by one goroutine at a time.
package packet
