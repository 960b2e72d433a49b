package bench

import "encoding/binary"

// MinTrackedSize is the smallest payload that carries the run tag, send time, publisher index and
// sequence number; smaller payloads are counted but give no latency and no loss accounting.
const MinTrackedSize = 26

// payloadMagic starts every tracked payload.
var payloadMagic = [2]byte{'i', 'b'}

// stamp is what a tracked payload says about its message.
type stamp struct {
	tag  uint32 // the run that published it
	sent int64  // UnixNano at encoding
	pub  uint32 // publisher index within its run
	seq  uint64 // the publisher's sequence number, from 0
}

// newPayload returns a payload of size bytes: filler, with room for the header when size allows.
func newPayload(size int) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	if size >= MinTrackedSize {
		copy(p, payloadMagic[:])
	}
	return p
}

// putStamp writes s into a payload made by newPayload (size >= MinTrackedSize).
func putStamp(p []byte, s stamp) {
	binary.BigEndian.PutUint32(p[2:], s.tag)
	binary.BigEndian.PutUint64(p[6:], uint64(s.sent))
	binary.BigEndian.PutUint32(p[14:], s.pub)
	binary.BigEndian.PutUint64(p[18:], s.seq)
}

// readStamp reads the header of a tracked payload; ok is false for any other payload.
func readStamp(p []byte) (s stamp, ok bool) {
	if len(p) < MinTrackedSize || p[0] != payloadMagic[0] || p[1] != payloadMagic[1] {
		return stamp{}, false
	}
	return stamp{
		tag:  binary.BigEndian.Uint32(p[2:]),
		sent: int64(binary.BigEndian.Uint64(p[6:])),
		pub:  binary.BigEndian.Uint32(p[14:]),
		seq:  binary.BigEndian.Uint64(p[18:]),
	}, true
}
