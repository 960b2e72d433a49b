package tlsconf

import (
	"testing"

	"github.com/fsnotify/fsnotify"
)

func TestRelevant(t *testing.T) {
	files := map[string]bool{"/etc/iotd/tls.crt": true}
	tests := []struct {
		name string
		ev   fsnotify.Event
		want bool
	}{
		{"file written", fsnotify.Event{Name: "/etc/iotd/tls.crt", Op: fsnotify.Write}, true},
		{"file renamed over", fsnotify.Event{Name: "/etc/iotd/tls.crt", Op: fsnotify.Create}, true},
		{"file removed", fsnotify.Event{Name: "/etc/iotd/tls.crt", Op: fsnotify.Remove}, true},
		{"mode change only", fsnotify.Event{Name: "/etc/iotd/tls.crt", Op: fsnotify.Chmod}, false},
		{"written and mode changed", fsnotify.Event{Name: "/etc/iotd/tls.crt", Op: fsnotify.Write | fsnotify.Chmod}, true},
		{"other file", fsnotify.Event{Name: "/etc/iotd/iotd.toml", Op: fsnotify.Write}, false},
		{"temporary file", fsnotify.Event{Name: "/etc/iotd/tls.crt.tmp", Op: fsnotify.Create}, false},
		{"kubernetes data link", fsnotify.Event{Name: "/etc/iotd/..data", Op: fsnotify.Create}, true},
		{"unclean name", fsnotify.Event{Name: "/etc/iotd//tls.crt", Op: fsnotify.Write}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := relevant(tt.ev, files); got != tt.want {
				t.Errorf("relevant(%v): got %v, want %v", tt.ev, got, tt.want)
			}
		})
	}
}
