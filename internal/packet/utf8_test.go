package packet

import "testing"

func TestValidateUTF8(t *testing.T) {
	tests := []struct {
		name string
		in   string
		stmt string // empty when valid
	}{
		{name: "empty", in: ""},
		{name: "ascii", in: "sensors/room-1/temp"},
		{name: "multibyte", in: "Zürich/温度/🌡"},
		{name: "MQTT-1.5.3-3 BOM is kept", in: "\uFEFFa"},
		{name: "control character is tolerated", in: "a\x01b"},
		{name: "MQTT-1.5.3-1 stray continuation byte", in: "a\x80", stmt: "MQTT-1.5.3-1"},
		{name: "MQTT-1.5.3-1 truncated sequence", in: "\xe2\x82", stmt: "MQTT-1.5.3-1"},
		{name: "MQTT-1.5.3-1 high surrogate", in: "\xed\xa0\x80", stmt: "MQTT-1.5.3-1"},
		{name: "MQTT-1.5.3-1 low surrogate", in: "\xed\xbf\xbf", stmt: "MQTT-1.5.3-1"},
		{name: "MQTT-1.5.3-1 overlong NUL", in: "\xc0\x80", stmt: "MQTT-1.5.3-1"},
		{name: "MQTT-1.5.3-1 above U+10FFFF", in: "\xf4\x90\x80\x80", stmt: "MQTT-1.5.3-1"},
		{name: "MQTT-1.5.3-2 U+0000", in: "a\x00b", stmt: "MQTT-1.5.3-2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateUTF8([]byte(tt.in))
			if tt.stmt == "" {
				if err != nil {
					t.Errorf("got error %v, want none", err)
				}
				return
			}
			wantError(t, err, tt.stmt, 0)
		})
	}
}
