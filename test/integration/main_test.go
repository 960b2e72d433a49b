package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// iotdBin is the iotd binary TestMain builds for the tests of the real command; buildErr says why
// there is none.
var (
	iotdBin  string
	buildErr error
)

// TestMain builds cmd/iotd once, runs the tests and then checks that no goroutine outlived them:
// every broker, Paho client and subprocess a test starts must be stopped by the test itself.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "iotd-integration-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "integration: temp dir: %v\n", err)
		os.Exit(1)
	}
	iotdBin, buildErr = buildIotd(dir)
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// buildIotd compiles the iotd command into dir. A failure is reported by the tests that need the
// binary rather than here, so that the other tests still run.
func buildIotd(dir string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go tool not found: %w", err)
	}
	bin := filepath.Join(dir, "iotd")
	cmd := exec.Command(goTool, "build", "-o", bin, "github.com/iotd/iotd/cmd/iotd")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/iotd: %w\n%s", err, out)
	}
	return bin, nil
}
