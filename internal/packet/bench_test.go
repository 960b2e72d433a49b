package packet

import "testing"

func BenchmarkDecodePublish(b *testing.B) {
	in := (&Publish{QoS: QoS1, Topic: []byte("building/7/floor/3/room/12/temperature"), PacketID: 42,
		Payload: []byte(`{"celsius":21.5,"ts":1700000000}`)}).Append(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	var p Publish
	for b.Loop() {
		h, body, _, err := Frame(in, 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		if err := DecodePublish(h, body, &p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodePublish(b *testing.B) {
	p := &Publish{QoS: QoS1, Topic: []byte("building/7/floor/3/room/12/temperature"), PacketID: 42,
		Payload: []byte(`{"celsius":21.5,"ts":1700000000}`)}
	buf := p.Append(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		buf = p.Append(buf[:0])
	}
}

func BenchmarkDecodeConnect(b *testing.B) {
	in := (&Connect{CleanSession: true, KeepAlive: 30, ClientID: "sensor-0042",
		Will:     &Will{Topic: "sensors/0042/status", Payload: []byte("offline"), QoS: QoS1, Retain: true},
		Username: "device", Password: []byte("s3cret")}).Append(nil)
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		h, body, _, err := Frame(in, 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Decode(h, body, Version311); err != nil {
			b.Fatal(err)
		}
	}
}
