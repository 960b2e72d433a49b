package internal_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyDirection fails when a package imports an IoTD package it must not: dependencies
// point down only (docs/architecture.md), and the leaves import no IoTD package at all.
func TestDependencyDirection(t *testing.T) {
	const mod = "github.com/iotd/iotd/internal/"
	allowed := map[string][]string{
		"packet":       {},
		"topic":        {},
		"config":       {},
		"auth":         {},
		"session":      {"packet"},
		"store":        {"packet"},
		"store/pebble": {"packet", "store"},
		"store/sqlite": {"packet", "store"},
		"tlsconf":      {},
		"limit":        {},
		"broker":       {"auth", "packet", "session", "store", "topic"},
		"server":       {"auth", "broker", "limit", "packet", "session", "store", "tlsconf", "topic"},
		"iotdtest":     {"auth", "broker", "limit", "packet", "server", "session", "store", "tlsconf", "topic"},
		"bench":        {"packet", "topic"},
	}
	for pkg, ok := range allowed {
		out, err := exec.Command("go", "list", "-deps", "./"+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list %s: %v\n%s", pkg, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			name, found := strings.CutPrefix(dep, mod)
			if !found || name == pkg {
				continue
			}
			permitted := false
			for _, a := range ok {
				if name == a {
					permitted = true
				}
			}
			if !permitted {
				t.Errorf("internal/%s imports internal/%s, which it must not", pkg, name)
			}
		}
	}
}
