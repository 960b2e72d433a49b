package packet

import "strconv"

// Protocol levels, as carried in the CONNECT variable header.
const (
	// Version31 is MQTT 3.1, whose CONNECT carries the protocol name "MQIsdp".
	Version31 byte = 3
	// Version311 is MQTT 3.1.1, whose CONNECT carries the protocol name "MQTT".
	Version311 byte = 4
	// Version5 is MQTT 5.0. It is not decoded yet: a CONNECT with level 5
	// fails with Code RefusedProtocolVersion.
	Version5 byte = 5
)

// MaxRemainingLength is the largest Remaining Length a four-byte variable
// length integer can carry (MQTT 3.1.1 section 2.2.3).
const MaxRemainingLength = 268435455

// maxHeaderLen is the longest fixed header: one type byte and four bytes of
// Remaining Length.
const maxHeaderLen = 5

// Type is an MQTT control packet type, the high nibble of the first byte.
type Type byte

// The MQTT 3.1.1 control packet types (Table 2.1). Values 0 and 15 are
// reserved and never decode.
const (
	TypeConnect     Type = 1
	TypeConnack     Type = 2
	TypePublish     Type = 3
	TypePuback      Type = 4
	TypePubrec      Type = 5
	TypePubrel      Type = 6
	TypePubcomp     Type = 7
	TypeSubscribe   Type = 8
	TypeSuback      Type = 9
	TypeUnsubscribe Type = 10
	TypeUnsuback    Type = 11
	TypePingreq     Type = 12
	TypePingresp    Type = 13
	TypeDisconnect  Type = 14
)

var typeNames = [...]string{
	TypeConnect:     "CONNECT",
	TypeConnack:     "CONNACK",
	TypePublish:     "PUBLISH",
	TypePuback:      "PUBACK",
	TypePubrec:      "PUBREC",
	TypePubrel:      "PUBREL",
	TypePubcomp:     "PUBCOMP",
	TypeSubscribe:   "SUBSCRIBE",
	TypeSuback:      "SUBACK",
	TypeUnsubscribe: "UNSUBSCRIBE",
	TypeUnsuback:    "UNSUBACK",
	TypePingreq:     "PINGREQ",
	TypePingresp:    "PINGRESP",
	TypeDisconnect:  "DISCONNECT",
}

// typeFields start error messages, so that a message names the packet in
// lowercase as the error string convention asks. Every nibble has one.
var typeFields = [16]string{
	0:               "type 0",
	TypeConnect:     "connect",
	TypeConnack:     "connack",
	TypePublish:     "publish",
	TypePuback:      "puback",
	TypePubrec:      "pubrec",
	TypePubrel:      "pubrel",
	TypePubcomp:     "pubcomp",
	TypeSubscribe:   "subscribe",
	TypeSuback:      "suback",
	TypeUnsubscribe: "unsubscribe",
	TypeUnsuback:    "unsuback",
	TypePingreq:     "pingreq",
	TypePingresp:    "pingresp",
	TypeDisconnect:  "disconnect",
	15:              "type 15",
}

// String returns the packet type's name as the standard spells it, e.g.
// "PUBLISH", or "Type(15)" for a value that names no 3.1.1 packet.
func (t Type) String() string {
	if t.known() {
		return typeNames[t]
	}
	return "Type(" + strconv.Itoa(int(t)) + ")"
}

// field returns the lowercase packet name that starts error messages.
func (t Type) field() string { return typeFields[t&0x0f] }

func (t Type) known() bool { return t >= TypeConnect && t <= TypeDisconnect }

// QoS is a quality of service level.
type QoS byte

// The three delivery levels; 3 is never valid on the wire ([MQTT-3.3.1-4]).
const (
	// QoS0 is at most once delivery.
	QoS0 QoS = 0
	// QoS1 is at least once delivery.
	QoS1 QoS = 1
	// QoS2 is exactly once delivery.
	QoS2 QoS = 2
)

// ConnackCode is a CONNACK return code (3.1.1 table 3.1).
type ConnackCode byte

// The CONNACK return codes of MQTT 3.1.1; 6 to 255 are reserved.
const (
	// Accepted means the connection is accepted.
	Accepted ConnackCode = 0
	// RefusedProtocolVersion means the server does not support the
	// requested protocol level ([MQTT-3.1.2-2]).
	RefusedProtocolVersion ConnackCode = 1
	// RefusedIdentifierRejected means the client identifier is well-formed
	// UTF-8 but not allowed by the server ([MQTT-3.1.3-9]).
	RefusedIdentifierRejected ConnackCode = 2
	// RefusedServerUnavailable means the MQTT service is unavailable.
	RefusedServerUnavailable ConnackCode = 3
	// RefusedBadUsernameOrPassword means the user name or password is
	// malformed or wrong.
	RefusedBadUsernameOrPassword ConnackCode = 4
	// RefusedNotAuthorized means the client is not authorized to connect.
	RefusedNotAuthorized ConnackCode = 5
)

var connackNames = [...]string{
	Accepted:                     "connection accepted",
	RefusedProtocolVersion:       "unacceptable protocol version",
	RefusedIdentifierRejected:    "identifier rejected",
	RefusedServerUnavailable:     "server unavailable",
	RefusedBadUsernameOrPassword: "bad user name or password",
	RefusedNotAuthorized:         "not authorized",
}

// String describes the return code in lowercase, e.g. "identifier
// rejected", or "ConnackCode(9)" for a reserved value.
func (c ConnackCode) String() string {
	if int(c) < len(connackNames) {
		return connackNames[c]
	}
	return "ConnackCode(" + strconv.Itoa(int(c)) + ")"
}

// SubackFailure is the SUBACK return code for a refused filter (0x80).
const SubackFailure byte = 0x80

// FixedHeader is the first two to five bytes of every packet.
type FixedHeader struct {
	// Type is the control packet type.
	Type Type
	// Flags is the low nibble of byte 1: DUP, QoS and RETAIN for PUBLISH,
	// fixed values from Table 2.2 for every other type.
	Flags byte
	// RemainingLength is the length of the body that follows the header.
	RemainingLength int
}

// Packet is one decoded MQTT control packet. The concrete types are the
// pointer types *Connect, *Connack, *Publish and so on; Decode returns them.
type Packet interface {
	// Type returns the control packet type.
	Type() Type
	// Append appends the full wire encoding (fixed header included) to dst
	// and returns the extended slice.
	Append(dst []byte) []byte
}

// Compile-time checks that every packet type implements Packet.
var (
	_ Packet = (*Connect)(nil)
	_ Packet = (*Connack)(nil)
	_ Packet = (*Publish)(nil)
	_ Packet = (*Puback)(nil)
	_ Packet = (*Pubrec)(nil)
	_ Packet = (*Pubrel)(nil)
	_ Packet = (*Pubcomp)(nil)
	_ Packet = (*Subscribe)(nil)
	_ Packet = (*Suback)(nil)
	_ Packet = (*Unsubscribe)(nil)
	_ Packet = (*Unsuback)(nil)
	_ Packet = (*Pingreq)(nil)
	_ Packet = (*Pingresp)(nil)
	_ Packet = (*Disconnect)(nil)
)
