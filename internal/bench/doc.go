// Package bench is IoTD's MQTT load generator: the library behind `iotd bench` and the
// peer-comparison program in scripts/bench/compare.
//
// # Runners
//
//   - [RunConn] opens N connections at a given pace and holds them idle ([OpenConns] does the
//     opening alone, for a caller that wants to measure the broker while they are held).
//   - [RunPub] runs P publishers at a rate or flat out, at QoS 0, 1 or 2, with a window of
//     unacknowledged messages per publisher at QoS 1 and 2.
//   - [RunSub] runs S subscribers on a filter and counts what arrives.
//   - [RunScenario] runs subscribers and publishers together and measures end to end: each
//     payload carries the send time, the publisher's index and a sequence number, so the
//     subscribers record latency in an HDR histogram and account for every message (losses and
//     duplicates per publisher and subscriber).
//
// Every runner is bounded by a message count and a duration, prints a progress line per interval
// when asked to, and returns a [Summary]: throughput, latency percentiles, errors, losses and the
// CPU the load generator itself used (getrusage), so a reader can tell when the generator, not
// the broker, was the limit.
//
// # Keeping the generator out of the way
//
// The hot loops use the project's codec (internal/packet) straight over net.Conn: a publisher
// encodes a batch of PUBLISH packets into one buffer and writes it with one call, a subscriber
// reads into a 64 KiB buffer, frames and decodes in place (no allocation per message) and writes
// its acknowledgements once per read. Counters are per client and summed only by the progress
// printer; latencies are buffered per client and merged into the shared histogram in blocks.
//
// # Payload
//
// A payload of at least [MinTrackedSize] bytes starts with a header: the magic "ib", a run tag
// (4 bytes), the send time (Unix nanoseconds, 8 bytes), the publisher index (4 bytes) and the
// sequence number (8 bytes), big-endian; the rest is filler. Smaller payloads are counted but
// carry no latency or sequence. Messages from another run (another tag) are tracked separately,
// so `iotd bench sub` in one process and `iotd bench pub` in another still measure latency.
//
// # Connections
//
// When a run opens more than [Target.SpreadAbove] connections to a loopback address, their
// source addresses are spread over 127.0.0.2-127.0.0.251 so that no single source address runs
// out of ephemeral ports. [RaiseFileLimit] lifts the process's soft RLIMIT_NOFILE to its hard
// limit.
package bench
