package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// fieldErrors returns the *FieldError values err joins, in order, and fails
// the test if err joins anything else.
func fieldErrors(t *testing.T, err error) []*FieldError {
	t.Helper()
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	out := make([]*FieldError, 0, len(errs))
	for _, e := range errs {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %q is not a *FieldError", e)
		}
		out = append(out, fe)
	}
	return out
}

// paths returns the Path of each FieldError.
func paths(fes []*FieldError) []string {
	out := make([]string, len(fes))
	for i, fe := range fes {
		out[i] = fe.Path
	}
	return out
}

// tcpListener is a "tcp" listener as Parse returns it for a [[listener]]
// table that sets only name and address.
func tcpListener(name, address string) Listener {
	return Listener{Name: name, Type: "tcp", Address: address, ClientAuth: "none", MinTLSVersion: "1.2"}
}

func TestDefault(t *testing.T) {
	want := Config{
		Listeners: []Listener{tcpListener("tcp-0", "0.0.0.0:1883")},
		Limits: Limits{
			MaxPacketSize:    1048576,
			MaxConnections:   0,
			ConnectTimeout:   Duration(10 * time.Second),
			MaxPendingBytes:  1048576,
			AuthFailDelay:    Duration(time.Second),
			AuthFailMaxDelay: Duration(30 * time.Second),
		},
		KeepAlive: KeepAlive{Max: 0},
		Retained:  Retained{MaxMessages: 100000, MaxPayloadSize: 0},
		Session: Session{MaxInflightMessages: 64, MaxQueuedMessages: 1000,
			RetryMaxInterval: Duration(time.Minute), Expiry: Duration(2 * time.Hour)},
		Store: Store{Backend: "file", Dir: "iotd-data", Fsync: "always",
			FsyncInterval: Duration(10 * time.Millisecond), OnCorrupt: "fail"},
		Auth:   Auth{CacheTTL: Duration(5 * time.Minute), DisconnectOnRevoke: true},
		Log:    Log{Level: "info", Format: "text"},
		Server: Server{ShutdownTimeout: Duration(10 * time.Second), Workers: 0},
	}
	got := Default()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Default() = %+v, want %+v", got, want)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v, want nil", err)
	}

	// Each call must return its own listener slice, so that one caller's
	// changes never leak into another's defaults.
	got.Listeners[0].Address = "changed"
	if again := Default(); again.Listeners[0].Address != "0.0.0.0:1883" {
		t.Fatalf("Default() shares its listener slice: got address %q", again.Listeners[0].Address)
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		name    string
		text    string
		want    Duration
		wantErr string
		marshal string
	}{
		{name: "seconds", text: "10s", want: Duration(10 * time.Second), marshal: "10s"},
		{name: "compound", text: "1m30s", want: Duration(90 * time.Second), marshal: "1m30s"},
		{name: "milliseconds", text: "100ms", want: Duration(100 * time.Millisecond), marshal: "100ms"},
		{name: "zero", text: "0", want: 0, marshal: "0s"},
		{name: "negative", text: "-2s", want: Duration(-2 * time.Second), marshal: "-2s"},
		{name: "missing unit", text: "10", wantErr: `must be a duration such as "10s" or "1m30s", got "10"`},
		{name: "unknown unit", text: "10x", wantErr: `got "10x"`},
		{name: "empty", text: "", wantErr: `got ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Duration
			err := d.UnmarshalText([]byte(tt.text))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("UnmarshalText(%q) error = %v, want it to contain %q", tt.text, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("UnmarshalText(%q) error = %v", tt.text, err)
			}
			if d != tt.want {
				t.Fatalf("UnmarshalText(%q) = %v, want %v", tt.text, d, tt.want)
			}
			if d.Std() != time.Duration(tt.want) {
				t.Fatalf("Std() = %v, want %v", d.Std(), time.Duration(tt.want))
			}
			text, err := d.MarshalText()
			if err != nil || string(text) != tt.marshal {
				t.Fatalf("MarshalText() = %q, %v, want %q, nil", text, err, tt.marshal)
			}
			if d.String() != tt.marshal {
				t.Fatalf("String() = %q, want %q", d.String(), tt.marshal)
			}
		})
	}
}

func TestFieldErrorError(t *testing.T) {
	e := &FieldError{Path: "limits.max_packet_size", Msg: "must be between 16 and 268435460, got 3"}
	want := "limits.max_packet_size: must be between 16 and 268435460, got 3"
	if got := e.Error(); got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

func TestAnonymousAllowed(t *testing.T) {
	tests := []struct {
		name         string
		passwordFile string
		auth         *bool // auth.allow_anonymous
		listener     *bool // listener.allow_anonymous
		want         bool
	}{
		{name: "nothing set, no users", want: true},
		{name: "nothing set, users: secure default", passwordFile: "passwd", want: false},
		{name: "auth false, no users", auth: new(false), want: false},
		{name: "auth true, users", passwordFile: "passwd", auth: new(true), want: true},
		{name: "auth false, users", passwordFile: "passwd", auth: new(false), want: false},
		{name: "listener true overrides the secure default", passwordFile: "passwd", listener: new(true), want: true},
		{name: "listener true overrides auth false", passwordFile: "passwd", auth: new(false), listener: new(true), want: true},
		{name: "listener false overrides auth true", auth: new(true), listener: new(false), want: false},
		{name: "listener false, nothing else set", listener: new(false), want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Auth.PasswordFile = tt.passwordFile
			c.Auth.AllowAnonymous = tt.auth
			l := c.Listeners[0]
			l.AllowAnonymous = tt.listener
			if got := c.AnonymousAllowed(l); got != tt.want {
				t.Fatalf("AnonymousAllowed() = %t, want %t", got, tt.want)
			}
		})
	}
}
