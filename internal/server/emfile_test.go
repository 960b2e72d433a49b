package server_test

import (
	"syscall"
	"testing"

	"github.com/iotd/iotd/internal/iotdtest"
)

// TestOutOfDescriptors fills the process's descriptor table so that accept4 fails with EMFILE:
// the server logs, backs off instead of spinning, keeps serving its clients, and accepts the
// waiting connection once descriptors are free again.
func TestOutOfDescriptors(t *testing.T) {
	env := start(t)
	keep := iotdtest.Dial(t, env.Addr)
	keep.MustConnect("keep", true)

	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	saved := lim
	lim.Cur = 256
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("cannot lower the fd limit: %v", err)
	}
	var filler []int
	release := func() {
		for _, fd := range filler {
			syscall.Close(fd)
		}
		filler = nil
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved)
	}
	defer release()
	for {
		fd, err := syscall.Dup(0)
		if err != nil {
			break
		}
		filler = append(filler, fd)
	}
	// Free exactly one descriptor: the client's socket takes it, the server's accept gets EMFILE.
	syscall.Close(filler[len(filler)-1])
	filler = filler[:len(filler)-1]
	c := iotdtest.Dial(t, env.Addr)
	env.Logs.WaitFor(t, "level=WARN", "accept failed; backing off", "too many open files")
	release()
	c.MustConnect("late", true)
	keep.Ping()
}
