package packet

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// codecCase is one row of the table that drives both encode and decode.
type codecCase struct {
	name string
	raw  []byte
	// pkt is the decoded form of raw; nil for a malformed case.
	pkt Packet
	// version is the connection's protocol level; 0 means Version311.
	version byte
	// max is the maximum packet size; 0 means the protocol maximum.
	max int
	// For malformed cases: the statement and CONNACK code the *Error must
	// carry, whether it must wrap ErrTooLarge, and a substring of its
	// message that names the field.
	stmt     string
	code     ConnackCode
	tooLarge bool
	msg      string
}

func (c codecCase) valid() bool { return c.pkt != nil }

func (c codecCase) level() byte {
	if c.version == 0 {
		return Version311
	}
	return c.version
}

var bigPayload = bytes.Repeat([]byte{0xAB}, 200)

// codecCases covers all 14 packet types, valid and malformed.
var codecCases = []codecCase{
	// CONNECT, valid.
	{
		name: "connect minimal",
		raw:  []byte{0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 'a'},
		pkt:  &Connect{ProtocolName: "MQTT", ProtocolLevel: 4, CleanSession: true, KeepAlive: 60, ClientID: "a"},
	},
	{
		name: "connect with will user name and password",
		raw: raw(0x10, str("MQTT"), []byte{0x04, 0xEE, 0x00, 0x0A},
			str("client-1"), str("will/t"), str("bye"), str("user"), str("pw")),
		pkt: &Connect{
			ProtocolName: "MQTT", ProtocolLevel: 4, CleanSession: true, KeepAlive: 10, ClientID: "client-1",
			Will:     &Will{Topic: "will/t", Payload: []byte("bye"), QoS: QoS1, Retain: true},
			Username: "user", HasUsername: true, Password: []byte("pw"), HasPassword: true,
		},
	},
	{
		name: "connect mqtt 3.1 MQIsdp",
		raw:  raw(0x10, str("MQIsdp"), []byte{0x03, 0x02, 0x00, 0x00}, str("c")),
		pkt:  &Connect{ProtocolName: "MQIsdp", ProtocolLevel: 3, CleanSession: true, ClientID: "c"},
	},
	{
		name: "connect empty client id",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x00, 0xFF, 0xFF}, str("")),
		pkt:  &Connect{ProtocolName: "MQTT", ProtocolLevel: 4, KeepAlive: 65535},
	},
	{
		name: "connect empty user name and password",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0xC2, 0x00, 0x00}, str("c"), str(""), str("")),
		pkt:  &Connect{ProtocolName: "MQTT", ProtocolLevel: 4, CleanSession: true, ClientID: "c", HasUsername: true, HasPassword: true},
	},
	{
		name: "MQTT-3.1.2-19 connect user name without password",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x80, 0x00, 0x00}, str("c"), str("u")),
		pkt:  &Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "c", Username: "u", HasUsername: true},
	},
	{
		name: "connect will qos 2 with empty message",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x14, 0x00, 0x00}, str("c"), str("w"), str("")),
		pkt:  &Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "c", Will: &Will{Topic: "w", QoS: QoS2}},
	},
	{
		name: "MQTT-1.5.3-3 connect client id keeps BOM",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x02, 0x00, 0x00}, str("\uFEFFid")),
		pkt:  &Connect{ProtocolName: "MQTT", ProtocolLevel: 4, CleanSession: true, ClientID: "\uFEFFid"},
	},
	// CONNECT, malformed.
	{
		name: "MQTT-3.1.2-1 connect wrong protocol name",
		raw:  raw(0x10, str("MQTX"), []byte{0x04, 0x02, 0x00, 0x00}, str("c")),
		stmt: "MQTT-3.1.2-1", msg: `connect: protocol name: got "MQTX"`,
	},
	{
		name: "MQTT-3.1.2-1 connect lowercase protocol name",
		raw:  raw(0x10, str("mqtt"), []byte{0x04, 0x02, 0x00, 0x00}, str("c")),
		stmt: "MQTT-3.1.2-1", msg: "protocol name",
	},
	{
		name: "MQTT-3.1.2-1 connect long protocol name is clipped in the message",
		raw:  raw(0x10, str(strings.Repeat("x", 300)), []byte{0x04, 0x02, 0x00, 0x00}, str("c")),
		stmt: "MQTT-3.1.2-1", msg: `got "` + strings.Repeat("x", 32) + `", want`,
	},
	{
		name: "MQTT-3.1.2-2 connect level 5 refused before its properties",
		raw:  raw(0x10, str("MQTT"), []byte{0x05, 0x02, 0x00, 0x3C, 0x00}, str("c")),
		stmt: "MQTT-3.1.2-2", code: RefusedProtocolVersion, msg: "protocol level: got 5",
	},
	{
		name: "MQTT-3.1.2-2 connect level 6 with nothing after it",
		raw:  raw(0x10, str("MQTT"), []byte{0x06}),
		stmt: "MQTT-3.1.2-2", code: RefusedProtocolVersion, msg: "protocol level",
	},
	{
		name: "MQTT-3.1.2-2 connect MQTT name with level 3",
		raw:  raw(0x10, str("MQTT"), []byte{0x03, 0x02, 0x00, 0x00}, str("c")),
		stmt: "MQTT-3.1.2-2", code: RefusedProtocolVersion, msg: "protocol level",
	},
	{
		name: "MQTT-3.1.2-2 connect MQIsdp name with level 4",
		raw:  raw(0x10, str("MQIsdp"), []byte{0x04, 0x02, 0x00, 0x00}, str("c")),
		stmt: "MQTT-3.1.2-2", code: RefusedProtocolVersion, msg: "protocol level",
	},
	{
		name: "MQTT-3.1.2-3 connect reserved flag set",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x03, 0x00, 0x00}, str("c")),
		stmt: "MQTT-3.1.2-3", msg: "connect flags",
	},
	{
		name: "MQTT-3.1.2-11 MQTT-3.1.2-13 connect will qos without will flag",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x0A, 0x00, 0x00}, str("c")),
		stmt: "MQTT-3.1.2-13", msg: "will qos",
	},
	{
		name: "MQTT-3.1.2-11 MQTT-3.1.2-15 connect will retain without will flag",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x22, 0x00, 0x00}, str("c")),
		stmt: "MQTT-3.1.2-15", msg: "will retain",
	},
	{
		name: "MQTT-3.1.2-14 connect will qos 3",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x1E, 0x00, 0x00}, str("c"), str("w"), str("m")),
		stmt: "MQTT-3.1.2-14", msg: "will qos 3",
	},
	{
		name: "MQTT-3.1.2-22 connect password without user name",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x42, 0x00, 0x00}, str("c"), str("p")),
		stmt: "MQTT-3.1.2-22", msg: "password flag",
	},
	{
		name: "MQTT-3.1.3-1 MQTT-3.1.3-3 connect missing client id",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x02, 0x00, 0x00}),
		stmt: "MQTT-3.1.3-1", msg: "client id: truncated",
	},
	{
		name: "MQTT-3.1.3-1 MQTT-3.1.2-9 connect missing will topic",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x06, 0x00, 0x00}, str("c")),
		stmt: "MQTT-3.1.3-1", msg: "will topic: truncated",
	},
	{
		name: "MQTT-3.1.3-1 MQTT-3.1.2-9 connect missing will message",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x06, 0x00, 0x00}, str("c"), str("w")),
		stmt: "MQTT-3.1.3-1", msg: "will message: truncated",
	},
	{
		name: "MQTT-3.1.3-1 MQTT-3.1.2-19 connect missing user name",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x82, 0x00, 0x00}, str("c")),
		stmt: "MQTT-3.1.3-1", msg: "user name: truncated",
	},
	{
		name: "MQTT-3.1.3-1 MQTT-3.1.2-21 connect missing password",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0xC2, 0x00, 0x00}, str("c"), str("u")),
		stmt: "MQTT-3.1.3-1", msg: "password: truncated",
	},
	{
		name: "MQTT-3.1.3-1 MQTT-3.1.2-18 connect trailing bytes after payload",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x02, 0x00, 0x00}, str("c"), str("u")),
		stmt: "MQTT-3.1.3-1", msg: "payload",
	},
	{
		name: "MQTT-3.1.3-4 MQTT-1.5.3-1 connect client id ill-formed utf-8",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x02, 0x00, 0x00}, str("a\xffb")),
		stmt: "MQTT-3.1.3-4", msg: "client id: ill-formed",
	},
	{
		name: "MQTT-3.1.3-4 MQTT-1.5.3-1 connect client id with surrogate",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x02, 0x00, 0x00}, str("\xed\xa0\x80")),
		stmt: "MQTT-3.1.3-4", msg: "MQTT-1.5.3-1",
	},
	{
		name: "MQTT-3.1.3-4 MQTT-1.5.3-2 connect client id with U+0000",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x02, 0x00, 0x00}, str("a\x00")),
		stmt: "MQTT-3.1.3-4", msg: "MQTT-1.5.3-2",
	},
	{
		name: "MQTT-3.1.3-10 connect will topic ill-formed utf-8",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x06, 0x00, 0x00}, str("c"), str("\xc0\x80"), str("m")),
		stmt: "MQTT-3.1.3-10", msg: "will topic",
	},
	{
		name: "MQTT-3.1.3-11 connect user name with U+0000",
		raw:  raw(0x10, str("MQTT"), []byte{0x04, 0x82, 0x00, 0x00}, str("c"), str("u\x00")),
		stmt: "MQTT-3.1.3-11", msg: "user name",
	},
	{name: "connect truncated protocol name", raw: raw(0x10, []byte{0x00, 0x04, 'M', 'Q'}), msg: "protocol name: truncated"},
	{name: "connect truncated protocol level", raw: raw(0x10, str("MQTT")), msg: "protocol level: truncated"},
	{name: "connect truncated connect flags", raw: raw(0x10, str("MQTT"), []byte{0x04}), msg: "connect flags: truncated"},
	{name: "connect truncated keep alive", raw: raw(0x10, str("MQTT"), []byte{0x04, 0x02, 0x00}), msg: "keep alive: truncated"},
	{
		name: "MQTT-2.2.2-1 MQTT-2.2.2-2 connect reserved fixed header flags",
		raw:  raw(0x11, str("MQTT"), []byte{0x04, 0x02, 0x00, 0x00}, str("c")),
		stmt: "MQTT-2.2.2-1", msg: "connect: fixed header flags",
	},

	// CONNACK.
	{name: "connack session present", raw: []byte{0x20, 0x02, 0x01, 0x00}, pkt: &Connack{SessionPresent: true}},
	{name: "connack not authorized", raw: []byte{0x20, 0x02, 0x00, 0x05}, pkt: &Connack{ReturnCode: RefusedNotAuthorized}},
	{name: "connack too long", raw: []byte{0x20, 0x03, 0x00, 0x00, 0x00}, msg: "connack: remaining length"},
	{name: "connack reserved acknowledge flags", raw: []byte{0x20, 0x02, 0x02, 0x00}, msg: "acknowledge flags"},
	{name: "connack reserved return code", raw: []byte{0x20, 0x02, 0x00, 0x06}, msg: "return code"},
	{
		name: "MQTT-3.2.2-4 connack session present with refusal",
		raw:  []byte{0x20, 0x02, 0x01, 0x02}, stmt: "MQTT-3.2.2-4", msg: "session present",
	},

	// PUBLISH, valid.
	{
		name: "publish qos 0",
		raw:  []byte{0x30, 0x0A, 0x00, 0x03, 'a', '/', 'b', 'h', 'e', 'l', 'l', 'o'},
		pkt:  &Publish{Topic: []byte("a/b"), Payload: []byte("hello")},
	},
	{
		name: "publish qos 1 dup retain",
		raw:  []byte{0x3B, 0x06, 0x00, 0x01, 't', 0x12, 0x34, 'x'},
		pkt:  &Publish{Dup: true, QoS: QoS1, Retain: true, Topic: []byte("t"), PacketID: 0x1234, Payload: []byte("x")},
	},
	{
		name: "publish qos 2 empty payload",
		raw:  []byte{0x34, 0x05, 0x00, 0x01, 't', 0x00, 0x01},
		pkt:  &Publish{QoS: QoS2, Topic: []byte("t"), PacketID: 1},
	},
	{
		name: "publish two-byte remaining length",
		raw:  raw(0x30, str("big"), bigPayload),
		pkt:  &Publish{Topic: []byte("big"), Payload: bigPayload},
	},
	{
		name: "publish at exactly the maximum packet size",
		raw:  []byte{0x30, 0x04, 0x00, 0x01, 't', 'x'},
		pkt:  &Publish{Topic: []byte("t"), Payload: []byte("x")},
		max:  6,
	},
	{
		name: "MQTT-1.5.3-3 publish topic keeps BOM",
		raw:  raw(0x30, str("\uFEFFt"), []byte("p")),
		pkt:  &Publish{Topic: []byte("\uFEFFt"), Payload: []byte("p")},
	},
	{
		name: "publish topic with wildcards is left to package topic",
		raw:  raw(0x30, str("a/#")),
		pkt:  &Publish{Topic: []byte("a/#")},
	},
	// PUBLISH, malformed.
	{name: "MQTT-3.3.1-4 publish qos 3", raw: []byte{0x36, 0x05, 0x00, 0x01, 't', 0x00, 0x01}, stmt: "MQTT-3.3.1-4", msg: "qos 3"},
	{name: "MQTT-3.3.1-2 publish dup at qos 0", raw: []byte{0x38, 0x03, 0x00, 0x01, 't'}, stmt: "MQTT-3.3.1-2", msg: "dup"},
	{name: "publish truncated topic", raw: []byte{0x30, 0x03, 0x00, 0x05, 't'}, msg: "topic name: truncated"},
	{name: "publish missing topic length", raw: []byte{0x30, 0x01, 0x00}, msg: "topic name: truncated"},
	{name: "MQTT-4.7.3-1 publish empty topic", raw: []byte{0x30, 0x03, 0x00, 0x00, 'x'}, stmt: "MQTT-4.7.3-1", msg: "topic name: empty"},
	{
		name: "MQTT-3.3.2-1 MQTT-1.5.3-1 publish topic ill-formed utf-8",
		raw:  raw(0x30, str("a\xff")), stmt: "MQTT-3.3.2-1", msg: "topic name",
	},
	{
		name: "MQTT-3.3.2-1 MQTT-4.7.3-2 MQTT-1.5.3-2 publish topic with U+0000",
		raw:  raw(0x30, str("a\x00b")), stmt: "MQTT-3.3.2-1", msg: "U+0000",
	},
	{
		name: "MQTT-2.3.1-1 publish qos 1 packet id 0",
		raw:  []byte{0x32, 0x05, 0x00, 0x01, 't', 0x00, 0x00}, stmt: "MQTT-2.3.1-1", msg: "packet identifier",
	},
	{name: "publish qos 1 truncated packet id", raw: []byte{0x32, 0x04, 0x00, 0x01, 't', 0x00}, msg: "packet identifier: truncated"},
	{name: "publish over maximum packet size", raw: []byte{0x30, 0x04, 0x00, 0x01, 't', 'x'}, max: 5, tooLarge: true, msg: "exceeds maximum 5"},
	{name: "publish announcing a huge body", raw: []byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F}, max: 1 << 20, tooLarge: true},

	// Packets carrying only a packet id.
	{name: "puback", raw: []byte{0x40, 0x02, 0x00, 0x01}, pkt: &Puback{PacketID: 1}},
	{name: "pubrec", raw: []byte{0x50, 0x02, 0xFF, 0xFF}, pkt: &Pubrec{PacketID: 0xFFFF}},
	{name: "MQTT-3.6.1-1 pubrel flags 0010", raw: []byte{0x62, 0x02, 0x00, 0x07}, pkt: &Pubrel{PacketID: 7}},
	{name: "pubcomp", raw: []byte{0x70, 0x02, 0x00, 0x07}, pkt: &Pubcomp{PacketID: 7}},
	{name: "unsuback", raw: []byte{0xB0, 0x02, 0x00, 0x0B}, pkt: &Unsuback{PacketID: 11}},
	{name: "puback too long", raw: []byte{0x40, 0x03, 0x00, 0x01, 0x00}, msg: "puback: remaining length: got 3, want 2"},
	{name: "pubrec too short", raw: []byte{0x50, 0x01, 0x00}, msg: "pubrec: remaining length"},
	{name: "pubrel empty", raw: []byte{0x62, 0x00}, msg: "pubrel: remaining length"},
	{name: "pubcomp too long", raw: []byte{0x70, 0x03, 0x00, 0x01, 0x02}, msg: "pubcomp: remaining length"},
	{name: "unsuback too short", raw: []byte{0xB0, 0x01, 0x00}, msg: "unsuback: remaining length"},
	{name: "MQTT-2.2.2-1 MQTT-2.2.2-2 puback reserved flags", raw: []byte{0x41, 0x02, 0x00, 0x01}, stmt: "MQTT-2.2.2-1", msg: "fixed header flags"},
	{name: "MQTT-3.6.1-1 pubrel flags 0000", raw: []byte{0x60, 0x02, 0x00, 0x01}, stmt: "MQTT-3.6.1-1", msg: "pubrel: fixed header flags"},
	{name: "puback in an unsupported protocol version", raw: []byte{0x40, 0x02, 0x00, 0x01}, version: Version5, msg: "protocol level 5"},

	// SUBSCRIBE.
	{
		name: "MQTT-3.8.1-1 subscribe two filters",
		raw:  raw(0x82, []byte{0x00, 0x0A}, str("a/+"), []byte{0x01}, str("#"), []byte{0x02}),
		pkt:  &Subscribe{PacketID: 10, Subscriptions: []Subscription{{Filter: "a/+", QoS: QoS1}, {Filter: "#", QoS: QoS2}}},
	},
	{name: "MQTT-3.8.1-1 subscribe flags 0000", raw: raw(0x80, []byte{0x00, 0x01}, str("a"), []byte{0x00}), stmt: "MQTT-3.8.1-1", msg: "subscribe: fixed header flags"},
	{name: "MQTT-3.8.3-3 subscribe without filters", raw: []byte{0x82, 0x02, 0x00, 0x01}, stmt: "MQTT-3.8.3-3", msg: "no topic filters"},
	{name: "MQTT-3.8.3-4 subscribe qos 3", raw: raw(0x82, []byte{0x00, 0x01}, str("a"), []byte{0x03}), stmt: "MQTT-3.8.3-4", msg: "requested qos 1"},
	{name: "MQTT-3.8.3-4 subscribe reserved qos bits", raw: raw(0x82, []byte{0x00, 0x01}, str("a"), []byte{0x00}, str("b"), []byte{0x41}), stmt: "MQTT-3.8.3-4", msg: "requested qos 2"},
	{name: "MQTT-3.8.3-1 MQTT-1.5.3-1 subscribe filter ill-formed utf-8", raw: raw(0x82, []byte{0x00, 0x01}, str("\xff"), []byte{0x00}), stmt: "MQTT-3.8.3-1", msg: "topic filter 1"},
	{name: "MQTT-3.8.3-1 MQTT-1.5.3-2 subscribe filter with U+0000", raw: raw(0x82, []byte{0x00, 0x01}, str("a\x00"), []byte{0x00}), stmt: "MQTT-3.8.3-1", msg: "U+0000"},
	{name: "MQTT-4.7.3-1 subscribe empty filter", raw: raw(0x82, []byte{0x00, 0x01}, str(""), []byte{0x00}), stmt: "MQTT-4.7.3-1", msg: "topic filter 1: empty"},
	{name: "MQTT-2.3.1-1 subscribe packet id 0", raw: raw(0x82, []byte{0x00, 0x00}, str("a"), []byte{0x00}), stmt: "MQTT-2.3.1-1", msg: "packet identifier"},
	{name: "subscribe truncated packet id", raw: []byte{0x82, 0x01, 0x00}, msg: "packet identifier: truncated"},
	{name: "subscribe truncated filter", raw: raw(0x82, []byte{0x00, 0x01, 0x00, 0x09, 'a'}), msg: "topic filter 1: truncated"},
	{name: "subscribe missing requested qos", raw: raw(0x82, []byte{0x00, 0x01}, str("a")), msg: "requested qos 1: truncated"},

	// SUBACK.
	{
		name: "MQTT-3.9.3-2 suback granted and failure codes",
		raw:  []byte{0x90, 0x06, 0x00, 0x0A, 0x00, 0x01, 0x02, 0x80},
		pkt:  &Suback{PacketID: 10, ReturnCodes: []byte{0, 1, 2, SubackFailure}},
	},
	{name: "MQTT-3.9.3-2 suback return code 3", raw: []byte{0x90, 0x03, 0x00, 0x0A, 0x03}, stmt: "MQTT-3.9.3-2", msg: "return code 1"},
	{name: "MQTT-3.8.4-5 suback without return codes", raw: []byte{0x90, 0x02, 0x00, 0x0A}, stmt: "MQTT-3.8.4-5", msg: "no return codes"},
	{name: "suback truncated packet id", raw: []byte{0x90, 0x01, 0x00}, msg: "packet identifier: truncated"},

	// UNSUBSCRIBE.
	{
		name: "MQTT-3.10.1-1 unsubscribe two filters",
		raw:  raw(0xA2, []byte{0x00, 0x0B}, str("a/+"), str("#")),
		pkt:  &Unsubscribe{PacketID: 11, Filters: []string{"a/+", "#"}},
	},
	{name: "MQTT-3.10.1-1 unsubscribe flags 0011", raw: raw(0xA3, []byte{0x00, 0x01}, str("a")), stmt: "MQTT-3.10.1-1", msg: "unsubscribe: fixed header flags"},
	{name: "MQTT-3.10.3-2 unsubscribe without filters", raw: []byte{0xA2, 0x02, 0x00, 0x01}, stmt: "MQTT-3.10.3-2", msg: "no topic filters"},
	{name: "MQTT-3.10.3-1 MQTT-1.5.3-1 unsubscribe filter ill-formed utf-8", raw: raw(0xA2, []byte{0x00, 0x01}, str("a"), str("\xed\xbf\xbf")), stmt: "MQTT-3.10.3-1", msg: "topic filter 2"},
	{name: "MQTT-4.7.3-1 unsubscribe empty filter", raw: raw(0xA2, []byte{0x00, 0x01}, str("")), stmt: "MQTT-4.7.3-1", msg: "empty"},
	{name: "MQTT-2.3.1-1 unsubscribe packet id 0", raw: raw(0xA2, []byte{0x00, 0x00}, str("a")), stmt: "MQTT-2.3.1-1", msg: "packet identifier"},
	{name: "unsubscribe truncated filter", raw: raw(0xA2, []byte{0x00, 0x01}, str("a"), []byte{0x00}), msg: "topic filter 2: truncated"},

	// Packets without a body.
	{name: "pingreq", raw: []byte{0xC0, 0x00}, pkt: &Pingreq{}},
	{name: "pingresp", raw: []byte{0xD0, 0x00}, pkt: &Pingresp{}},
	{name: "disconnect", raw: []byte{0xE0, 0x00}, pkt: &Disconnect{}},
	{name: "pingreq with a body", raw: []byte{0xC0, 0x01, 0x00}, msg: "pingreq: remaining length: got 1, want 0"},
	{name: "pingresp with a body", raw: []byte{0xD0, 0x01, 0x00}, msg: "pingresp: remaining length"},
	{name: "disconnect with a body", raw: []byte{0xE0, 0x01, 0x00}, msg: "disconnect: remaining length"},
	{name: "MQTT-3.14.1-1 disconnect reserved flags", raw: []byte{0xE4, 0x00}, stmt: "MQTT-3.14.1-1", msg: "disconnect: fixed header flags"},

	// Fixed header.
	{name: "reserved packet type 0", raw: []byte{0x00, 0x00}, msg: "packet type 0 is reserved"},
	{name: "reserved packet type 15", raw: []byte{0xF0, 0x00}, msg: "packet type 15 is reserved"},
	{name: "remaining length longer than 4 bytes", raw: []byte{0x30, 0x80, 0x80, 0x80, 0x80, 0x01}, msg: "longer than 4 bytes"},
}

// TestCodec runs every table case both ways: valid cases must encode to
// their bytes and decode to their packet; malformed ones must fail with
// the expected *Error.
func TestCodec(t *testing.T) {
	for _, c := range codecCases {
		t.Run(c.name, func(t *testing.T) {
			p, n, err := decodeAll(c.raw, c.max, c.level())
			if !c.valid() {
				if err == nil {
					t.Fatalf("decoded %#v, want an error", p)
				}
				wantError(t, err, c.stmt, c.code)
				if got := errors.Is(err, ErrTooLarge); got != c.tooLarge {
					t.Errorf("got errors.Is(err, ErrTooLarge) = %v, want %v (error: %v)", got, c.tooLarge, err)
				}
				if !strings.Contains(err.Error(), c.msg) {
					t.Errorf("got error %q, want it to contain %q", err, c.msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("decode: got error %v", err)
			}
			if n != len(c.raw) {
				t.Errorf("decode: got n %d, want %d", n, len(c.raw))
			}
			if !equalPacket(p, c.pkt) {
				t.Errorf("decode: got %#v, want %#v", p, c.pkt)
			}
			if p.Type() != c.pkt.Type() {
				t.Errorf("decode: got type %v, want %v", p.Type(), c.pkt.Type())
			}
			if got := c.pkt.Append(nil); !bytes.Equal(got, c.raw) {
				t.Errorf("encode: got % x, want % x", got, c.raw)
			}
			prefix := []byte("prefix")
			if got := c.pkt.Append(prefix[:len(prefix):len(prefix)]); !bytes.Equal(got, append(prefix, c.raw...)) {
				t.Errorf("encode after prefix: got % x, want prefix then % x", got, c.raw)
			}
		})
	}
}

// TestFramePrefixes checks that every proper prefix of a valid packet is
// incomplete, and that a following packet is left alone.
func TestFramePrefixes(t *testing.T) {
	for _, c := range codecCases {
		if !c.valid() {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			for i := range len(c.raw) {
				if _, _, _, err := Frame(c.raw[:i], c.max); err != ErrIncomplete {
					t.Fatalf("prefix of %d bytes: got error %v, want ErrIncomplete", i, err)
				}
			}
			two := append(append([]byte(nil), c.raw...), 0xC0, 0x00)
			h, body, n, err := Frame(two, 0)
			if err != nil {
				t.Fatalf("got error %v", err)
			}
			if n != len(c.raw) || h.RemainingLength != len(body) || cap(body) != len(body) {
				t.Errorf("got n %d, len(body) %d, cap(body) %d, want n %d and cap = len = %d",
					n, len(body), cap(body), len(c.raw), h.RemainingLength)
			}
			if h.Type != c.pkt.Type() {
				t.Errorf("got type %v, want %v", h.Type, c.pkt.Type())
			}
		})
	}
}

// TestAllTypesCovered makes sure the table exercises all 14 packet types
// in both directions.
func TestAllTypesCovered(t *testing.T) {
	seen := map[Type]bool{}
	for _, c := range codecCases {
		if c.valid() {
			seen[c.pkt.Type()] = true
		}
	}
	for typ := TypeConnect; typ <= TypeDisconnect; typ++ {
		if !seen[typ] {
			t.Errorf("no valid case for %v", typ)
		}
	}
}

func TestDecodePublishAliasesBody(t *testing.T) {
	b := []byte{0x32, 0x08, 0x00, 0x02, 'a', 'b', 0x00, 0x05, 'x', 'y'}
	h, body, _, err := Frame(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	var p Publish
	if err := DecodePublish(h, body, &p); err != nil {
		t.Fatal(err)
	}
	if &p.Topic[0] != &b[4] || &p.Payload[0] != &b[8] {
		t.Errorf("topic and payload must alias the body")
	}
	if cap(p.Payload) != len(p.Payload) {
		t.Errorf("got payload cap %d, want %d: an append could overwrite the next packet", cap(p.Payload), len(p.Payload))
	}
}

func TestDecodePublishLeavesPacketOnError(t *testing.T) {
	p := Publish{Topic: []byte("keep"), PacketID: 9}
	err := DecodePublish(FixedHeader{Type: TypePublish, Flags: 0x02}, []byte{0x00, 0x01, 't', 0x00, 0x00}, &p)
	wantError(t, err, "MQTT-2.3.1-1", 0)
	if string(p.Topic) != "keep" || p.PacketID != 9 {
		t.Errorf("got %+v, want it unchanged", p)
	}
	err = DecodePublish(FixedHeader{Type: TypePuback}, []byte{0x00, 0x01}, &p)
	wantError(t, err, "", 0)
}

// TestDecodeChecksHeader covers headers built by hand rather than by
// ParseFixedHeader.
func TestDecodeChecksHeader(t *testing.T) {
	tests := []struct {
		name string
		h    FixedHeader
		body []byte
		stmt string
	}{
		{name: "MQTT-3.6.1-1 pubrel flags 0000", h: FixedHeader{Type: TypePubrel}, body: []byte{0, 1}, stmt: "MQTT-3.6.1-1"},
		{name: "MQTT-2.2.2-1 connack flags 1000", h: FixedHeader{Type: TypeConnack, Flags: 8}, body: []byte{0, 0}, stmt: "MQTT-2.2.2-1"},
		{name: "reserved type 0", h: FixedHeader{}, body: nil},
		{name: "reserved type 15", h: FixedHeader{Type: 15}, body: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Decode(tt.h, tt.body, Version311)
			if p != nil {
				t.Errorf("got packet %#v, want nil", p)
			}
			wantError(t, err, tt.stmt, 0)
		})
	}
}

// TestDecodeVersions checks that CONNECT ignores the version and the other
// packets accept exactly 3.1 and 3.1.1.
func TestDecodeVersions(t *testing.T) {
	connect := (&Connect{ClientID: "c"}).Append(nil)
	puback := (&Puback{PacketID: 1}).Append(nil)
	tests := []struct {
		name    string
		raw     []byte
		version byte
		ok      bool
	}{
		{name: "connect with version 0", raw: connect, version: 0, ok: true},
		{name: "connect with version 5", raw: connect, version: Version5, ok: true},
		{name: "puback with version 3", raw: puback, version: Version31, ok: true},
		{name: "puback with version 4", raw: puback, version: Version311, ok: true},
		{name: "puback with version 0", raw: puback, version: 0},
		{name: "puback with version 5", raw: puback, version: Version5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := decodeAll(tt.raw, 0, tt.version)
			if tt.ok && err != nil {
				t.Errorf("got error %v, want none", err)
			}
			if !tt.ok {
				wantError(t, err, "", 0)
			}
		})
	}
}

// TestConnectAppendDefaults checks how Append fills in what a hand-built
// Connect leaves out.
func TestConnectAppendDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   *Connect
		want *Connect
	}{
		{
			name: "zero level and name give 3.1.1",
			in:   &Connect{ClientID: "x"},
			want: &Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "x"},
		},
		{
			name: "level 3 gives MQIsdp",
			in:   &Connect{ProtocolLevel: 3, ClientID: "x"},
			want: &Connect{ProtocolName: "MQIsdp", ProtocolLevel: 3, ClientID: "x"},
		},
		{
			name: "user name and password imply their flags",
			in:   &Connect{ClientID: "x", Username: "u", Password: []byte("p")},
			want: &Connect{ProtocolName: "MQTT", ProtocolLevel: 4, ClientID: "x", Username: "u", HasUsername: true, Password: []byte("p"), HasPassword: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _, err := decodeAll(tt.in.Append(nil), 0, Version311)
			if err != nil {
				t.Fatal(err)
			}
			if !equalPacket(p, tt.want) {
				t.Errorf("got %#v, want %#v", p, tt.want)
			}
		})
	}
}

func TestAppendPublishHeader(t *testing.T) {
	tests := []struct {
		name    string
		p       Publish
		payload []byte
	}{
		{name: "qos 0", p: Publish{Topic: []byte("a/b")}, payload: []byte("hello")},
		{name: "qos 1 retain", p: Publish{QoS: QoS1, Retain: true, Topic: []byte("a"), PacketID: 3}, payload: bigPayload},
		{name: "qos 2 dup empty payload", p: Publish{QoS: QoS2, Dup: true, Topic: []byte("a"), PacketID: 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			whole := tt.p
			whole.Payload = tt.payload
			want := whole.Append(nil)
			got := AppendPublishHeader(nil, &tt.p, len(tt.payload))
			if cap(got)-len(got) < len(tt.payload) {
				t.Errorf("got spare capacity %d, want room for the %d byte payload", cap(got)-len(got), len(tt.payload))
			}
			got = append(got, tt.payload...)
			if !bytes.Equal(got, want) {
				t.Errorf("got % x, want % x", got, want)
			}
		})
	}
}

func TestTypeString(t *testing.T) {
	tests := []struct {
		typ  Type
		want string
	}{
		{TypeConnect, "CONNECT"}, {TypeConnack, "CONNACK"}, {TypePublish, "PUBLISH"}, {TypePuback, "PUBACK"},
		{TypePubrec, "PUBREC"}, {TypePubrel, "PUBREL"}, {TypePubcomp, "PUBCOMP"}, {TypeSubscribe, "SUBSCRIBE"},
		{TypeSuback, "SUBACK"}, {TypeUnsubscribe, "UNSUBSCRIBE"}, {TypeUnsuback, "UNSUBACK"},
		{TypePingreq, "PINGREQ"}, {TypePingresp, "PINGRESP"}, {TypeDisconnect, "DISCONNECT"},
		{0, "Type(0)"}, {15, "Type(15)"}, {200, "Type(200)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.typ.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestConnackCodeString(t *testing.T) {
	tests := []struct {
		code ConnackCode
		want string
	}{
		{Accepted, "connection accepted"},
		{RefusedProtocolVersion, "unacceptable protocol version"},
		{RefusedIdentifierRejected, "identifier rejected"},
		{RefusedServerUnavailable, "server unavailable"},
		{RefusedBadUsernameOrPassword, "bad user name or password"},
		{RefusedNotAuthorized, "not authorized"},
		{6, "ConnackCode(6)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.code.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{name: "with statement", err: &Error{Statement: "MQTT-3.1.2-1", Msg: "connect: protocol name: bad"}, want: "connect: protocol name: bad [MQTT-3.1.2-1]"},
		{name: "without statement", err: &Error{Msg: "puback: remaining length: got 3, want 2"}, want: "puback: remaining length: got 3, want 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if tt.err.Unwrap() != nil {
				t.Errorf("got Unwrap %v, want nil", tt.err.Unwrap())
			}
		})
	}
}
