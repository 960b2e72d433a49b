package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/iotdtest"
	"github.com/iotd/iotd/internal/server"
)

func TestRunBenchFlags(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantStderr string
	}{
		{"no subcommand", nil, 2, "", "Usage:"},
		{"help", []string{"--help"}, 0, "iotd bench conn", ""},
		{"help word", []string{"help"}, 0, "iotd bench scenario", ""},
		{"unknown subcommand", []string{"blast"}, 2, "", `unknown subcommand "blast"`},
		{"conn help", []string{"conn", "--help"}, 0, "Usage: iotd bench conn", ""},
		{"pub help", []string{"pub", "--help"}, 0, "-inflight", ""},
		{"sub help", []string{"sub", "-help"}, 0, "-filter", ""},
		{"scenario help", []string{"scenario", "--help"}, 0, "-extra-subs", ""},
		{"unknown flag", []string{"pub", "--bogus"}, 2, "", "flag provided but not defined"},
		{"bad number", []string{"pub", "-c", "many"}, 2, "", "invalid value"},
		{"qos 3", []string{"pub", "--qos", "3"}, 2, "", "qos must be 0, 1 or 2"},
		{"sub-qos 3", []string{"scenario", "--sub-qos", "3"}, 2, "", "qos must be 0, 1 or 2"},
		{"extra argument", []string{"sub", "extra"}, 2, "", `unexpected argument "extra"`},
		{"invalid option", []string{"pub", "--inflight", "-1"}, 2, "", "inflight -1"},
		{"wildcard topic", []string{"scenario", "--topic", "a/#"}, 2, "", "wildcards"},
		{"bad address", []string{"conn", "--addr", "nohost"}, 2, "", "addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := runBench(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("stdout %q, want it to contain %q", stdout.String(), tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}

func TestRunBenchRuns(t *testing.T) {
	env := iotdtest.Start(t, server.Options{}, broker.Options{})
	tests := []struct {
		name     string
		args     []string
		wantCode int
		want     string
	}{
		{"conn", []string{"conn", "--addr", env.Addr, "-c", "3", "--duration", "1ms", "--quiet"}, 0, "3/3 connected"},
		{"pub", []string{"pub", "--addr", env.Addr, "-c", "2", "--count", "50", "--qos", "1", "--quiet"}, 0, "100 acknowledged"},
		{"sub", []string{"sub", "--addr", env.Addr, "--duration", "1ms", "--quiet"}, 0, "errors        0"},
		{"scenario", []string{"scenario", "--addr", env.Addr, "--pubs", "2", "--subs", "2", "--count", "100", "--qos", "2", "--total-rate", "20000", "--quiet"},
			0, "400 expected, 0 lost"},
		{"scenario with -h and -p", []string{"scenario", "-h", "127.0.0.1", "-p", env.Addr[strings.LastIndex(env.Addr, ":")+1:],
			"--count", "10", "--extra-subs", "20", "--sub-qos", "0", "--progress", "1ms"}, 0, "20 installed"},
		{"failure exits 1", []string{"pub", "--addr", "127.0.0.1:1", "--count", "1", "--quiet"}, 1, "FAILED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := runBench(tt.args, &stdout, &stderr); code != tt.wantCode {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.want) {
				t.Errorf("stdout %q, want it to contain %q", stdout.String(), tt.want)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		if code := runBench([]string{"scenario", "--addr", env.Addr, "--count", "20", "--qos", "1", "--json", "--quiet"}, &stdout, &stderr); code != 0 {
			t.Fatalf("exit %d\nstderr: %s", code, stderr.String())
		}
		var s struct {
			Mode     string `json:"mode"`
			Sent     uint64 `json:"sent"`
			Received uint64 `json:"received"`
			Lost     uint64 `json:"lost"`
		}
		if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
			t.Fatalf("%v\n%s", err, stdout.String())
		}
		if s.Mode != "scenario" || s.Sent != 20 || s.Received != 20 || s.Lost != 0 {
			t.Errorf("summary %+v, want scenario, 20 sent, 20 received, 0 lost", s)
		}
	})
}
