package pebble

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/iotd/iotd/internal/packet"
	"github.com/iotd/iotd/internal/store"
)

// putOps has one Put operation of every kind, with edge values.
var putOps = []struct {
	name string
	op   store.Op
}{
	{"session without will", store.Op{Kind: store.PutSession, ClientID: "c", Session: &store.Session{ClientID: "c", DisconnectedAt: 1_700_000_000_000_000_000}}},
	{"session with will", store.Op{Kind: store.PutSession, ClientID: "ä/b", Session: &store.Session{ClientID: "ä/b",
		Will: &store.Message{ID: 7, Topic: "w/t", Payload: []byte{0, 1, 2}, QoS: packet.QoS2, Retain: true}}}},
	{"session negative time, empty will", store.Op{Kind: store.PutSession, ClientID: "", Session: &store.Session{
		DisconnectedAt: math.MinInt64, Will: &store.Message{Payload: []byte{}}}}},
	{"session max time", store.Op{Kind: store.PutSession, ClientID: "x", Session: &store.Session{ClientID: "x", DisconnectedAt: math.MaxInt64}}},
	{"subscription", store.Op{Kind: store.PutSubscription, ClientID: "c", Name: "a/+/#", QoS: packet.QoS2}},
	{"subscription empty id", store.Op{Kind: store.PutSubscription, ClientID: "", Name: "#", QoS: packet.QoS0}},
	{"retained", store.Op{Kind: store.PutRetained, Name: "r/1", Payload: []byte("hello"), QoS: packet.QoS1}},
	{"retained empty", store.Op{Kind: store.PutRetained, Name: "", Payload: []byte{}}},
	{"message", store.Op{Kind: store.PutMessage, ID: math.MaxUint64, Name: "t", Payload: []byte{255}, QoS: packet.QoS1, Retain: true}},
	{"message empty", store.Op{Kind: store.PutMessage, ID: 0, Name: "", Payload: []byte{}}},
	{"outbound", store.Op{Kind: store.PutOutbound, ClientID: "c", Outbound: store.Outbound{Seq: math.MaxUint64, MsgID: 1 << 40, QoS: packet.QoS2, State: store.AwaitPubrec, PacketID: 65535}}},
	{"outbound pubcomp", store.Op{Kind: store.PutOutbound, ClientID: "c", Outbound: store.Outbound{Seq: 0, QoS: packet.QoS2, State: store.AwaitPubcomp, PacketID: 1}}},
	{"inbound", store.Op{Kind: store.PutInbound, ClientID: strings.Repeat("long", 100), PacketID: 65535}},
}

func TestRecordRoundTrip(t *testing.T) {
	for _, tc := range putOps {
		t.Run(tc.name, func(t *testing.T) {
			key, val := appendRecord(nil, nil, &tc.op)
			var got store.Op
			var d decoder
			meta, err := d.decode(key, val, &got)
			if err != nil || meta {
				t.Fatalf("decode = %v, meta %v", err, meta)
			}
			want := tc.op
			if want.Session != nil && want.Session.ClientID != want.ClientID {
				s := *want.Session
				s.ClientID = want.ClientID // the key names the session
				want.Session = &s
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v, want %+v", got, want)
			}
			if got.Session != nil && got.Session.Will != nil && len(tc.op.Session.Will.Payload) > 0 &&
				&got.Session.Will.Payload[0] == &val[len(val)-len(got.Session.Will.Payload)] {
				t.Fatal("the will's payload aliases the stored value")
			}
			// Every strict prefix of the value is short, and one byte more is trailing.
			for n := range len(val) {
				if _, err := d.decode(key, val[:n], new(store.Op)); err == nil && !hasRest(tc.op.Kind, tc.op.Session) {
					t.Fatalf("decode of value[:%d] succeeded", n)
				}
			}
			if !hasRest(tc.op.Kind, tc.op.Session) {
				if _, err := d.decode(key, append(bytes.Clone(val), 0), new(store.Op)); err == nil {
					t.Fatal("decode with a trailing byte succeeded")
				}
			}
		})
	}
}

// hasRest reports whether a record's value ends with a payload of any length.
func hasRest(k store.Kind, s *store.Session) bool {
	return k == store.PutRetained || k == store.PutMessage || (k == store.PutSession && s.Will != nil)
}

func TestKeysOfClientsAreDisjoint(t *testing.T) {
	// Each client's range [prefix+subSession, prefix+subEnd) holds only its own keys.
	ids := []string{"", "a", "ab", "a/b", "a\x00", "a\x01", "a\x04", "\x01", strings.Repeat("z", 200), strings.Repeat("z", 201)}
	for _, id := range ids {
		lo := appendSessionKey(nil, id)
		hi := append(bytes.Clone(lo[:len(lo)-1]), subEnd)
		for _, other := range ids {
			for _, k := range [][]byte{appendSessionKey(nil, other), appendSubscriptionKey(nil, other, "\xff\xff"),
				appendOutboundKey(nil, other, math.MaxUint64), appendInboundKey(nil, other, 0)} {
				in := bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0
				if in != (id == other) {
					t.Errorf("key %q of client %q in range of %q: %v", k, other, id, in)
				}
			}
		}
		for _, k := range [][]byte{appendRetainedKey(nil, id), appendMessageKey(nil, 1), versionKey} {
			if bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) < 0 {
				t.Errorf("key %q in range of client %q", k, id)
			}
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	sk := appendSessionKey(nil, "c")
	ok := func(op store.Op) []byte { _, v := appendRecord(nil, nil, &op); return v }
	tests := []struct {
		name     string
		key, val []byte
		want     string
	}{
		{"empty key", nil, nil, "empty key"},
		{"unknown table", []byte{9}, []byte{1}, "unknown key table"},
		{"client key without length", []byte{tagClient}, []byte{1}, "truncated"},
		{"client key non-minimal length", []byte{tagClient, 0x81, 0x00, 'c', subSession}, []byte{1, 0, 0}, "varint"},
		{"client key overlong varint", append([]byte{tagClient}, bytes.Repeat([]byte{0xff}, 11)...), []byte{1}, "varint"},
		{"client key id too short", []byte{tagClient, 5, 'c'}, []byte{1}, "truncated"},
		{"client key without type", []byte{tagClient, 1, 'c'}, []byte{1}, "truncated"},
		{"client key unknown type", []byte{tagClient, 1, 'c', 9}, []byte{1}, "unknown client record type"},
		{"session key trailing", append(bytes.Clone(sk), 0), []byte{1, 0, 0}, "key: record has trailing"},
		{"outbound key short", append(appendClientPrefix(nil, "c"), subOutbound, 1), ok(store.Op{Kind: store.PutOutbound}), "key: record is truncated"},
		{"inbound key short", append(appendClientPrefix(nil, "c"), subInbound, 1), []byte{1}, "key: record is truncated"},
		{"message key short", []byte{tagMessage, 1}, ok(store.Op{Kind: store.PutMessage}), "key: record is truncated"},
		{"empty value", sk, nil, "truncated"},
		{"unknown encoding", sk, []byte{2, 0, 0}, "unknown record encoding 2"},
		{"unknown session flags", sk, []byte{1, 2, 0}, "session flags"},
		{"session trailing", sk, []byte{1, 0, 0, 0}, "trailing"},
		{"session will topic too long", sk, []byte{1, 1, 0, 9, 'w'}, "truncated"},
		{"will QoS 3", sk, []byte{1, 1, 0, 1, 'w', 3, 0, 0}, "QoS 3"},
		{"will retain 2", sk, []byte{1, 1, 0, 1, 'w', 1, 2, 0}, "flag 2"},
		{"subscription QoS 3", appendSubscriptionKey(nil, "c", "f"), []byte{1, 3}, "QoS 3"},
		{"subscription QoS 0x80", appendSubscriptionKey(nil, "c", "f"), []byte{1, 0x80}, "QoS 128"},
		{"outbound state 4", appendOutboundKey(nil, "c", 1), []byte{1, 0, 1, 4, 0, 0}, "state 4"},
		{"outbound short", appendOutboundKey(nil, "c", 1), []byte{1, 0, 1, 1, 0}, "truncated"},
		{"inbound trailing", appendInboundKey(nil, "c", 1), []byte{1, 0}, "trailing"},
		{"retained QoS 3", appendRetainedKey(nil, "r"), []byte{1, 3, 'p'}, "QoS 3"},
		{"retained without QoS", appendRetainedKey(nil, "r"), []byte{1}, "truncated"},
		{"message retain 7", appendMessageKey(nil, 1), []byte{1, 0, 7, 0}, "flag 7"},
		{"message topic too long", appendMessageKey(nil, 1), []byte{1, 0, 0, 5, 't'}, "truncated"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var d decoder
			_, err := d.decode(tc.key, tc.val, new(store.Op))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decode(%q, %q) = %v; want an error with %q", tc.key, tc.val, err, tc.want)
			}
		})
	}
}

func TestDecodeVersion(t *testing.T) {
	tests := []struct {
		name string
		val  []byte
		want uint64
		ok   bool
	}{
		{"zero", appendVersionValue(nil, 0), 0, true},
		{"large", appendVersionValue(nil, 1<<40), 1 << 40, true},
		{"empty", nil, 0, false},
		{"no number", []byte{1}, 0, false},
		{"wrong encoding", []byte{0, 1}, 0, false},
		{"non-minimal", []byte{1, 0x80, 0}, 0, false},
		{"trailing", []byte{1, 1, 1}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeVersion(tc.val)
			if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
				t.Fatalf("decodeVersion(%x) = %d, %v; want %d, ok %v", tc.val, got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestDecoderSharesClientID(t *testing.T) {
	var d decoder
	var a, b, c store.Op
	for _, x := range []struct {
		op  *store.Op
		key []byte
	}{{&a, appendInboundKey(nil, "client", 1)}, {&b, appendInboundKey(nil, "client", 2)}, {&c, appendInboundKey(nil, "other", 1)}} {
		if _, err := d.decode(x.key, appendInboundValue(nil), x.op); err != nil {
			t.Fatal(err)
		}
	}
	if a.ClientID != "client" || b.ClientID != "client" || c.ClientID != "other" {
		t.Fatalf("ids %q %q %q", a.ClientID, b.ClientID, c.ClientID)
	}
	if unsafe.StringData(a.ClientID) != unsafe.StringData(b.ClientID) {
		t.Fatal("adjacent records of one client do not share the id")
	}
}

// FuzzDecode checks that decoding never panics, and that whatever decodes encodes back to the same
// bytes: every record has exactly one encoding.
func FuzzDecode(f *testing.F) {
	for _, tc := range putOps {
		k, v := appendRecord(nil, nil, &tc.op)
		f.Add(k, v)
	}
	f.Add(versionKey, appendVersionValue(nil, 1))
	f.Add([]byte{tagClient, 0x80}, []byte{1, 1, 0x80})
	f.Fuzz(func(t *testing.T, key, val []byte) {
		var d decoder
		var op store.Op
		meta, err := d.decode(key, val, &op)
		if bytes.Equal(key, versionKey) {
			if v, err := decodeVersion(val); err == nil && !bytes.Equal(appendVersionValue(nil, v), val) {
				t.Fatalf("version %x decodes to %d, which encodes to %x", val, v, appendVersionValue(nil, v))
			}
		}
		if err != nil || meta {
			return
		}
		k2, v2 := appendRecord(nil, nil, &op)
		if !bytes.Equal(k2, key) || !bytes.Equal(v2, val) {
			t.Fatalf("(%x, %x) decodes to %+v, which encodes to (%x, %x)", key, val, op, k2, v2)
		}
	})
}
