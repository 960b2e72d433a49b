package bench

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"syscall"
	"time"
)

// maxPayload bounds the payload size a run may ask for: far above any benchmark, far below the
// protocol's 256 MiB.
const maxPayload = 16 << 20

// RaiseFileLimit lifts the soft RLIMIT_NOFILE of the process to its hard limit, so a run can hold
// as many connections as the system lets it, and returns the soft limit in force afterwards.
func RaiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return 0, err
		}
	}
	return lim.Cur, nil
}

// cpuTime returns the user and system CPU time the process has used so far.
func cpuTime() (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0 // cannot happen for RUSAGE_SELF; a zero reading only spoils the CPU figure
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// newRunTag returns a random tag that tells this run's payloads and client ids from another's.
func newRunTag() uint32 {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return uint32(time.Now().UnixNano()) // crypto/rand does not fail on Linux; be safe anyway
	}
	return binary.BigEndian.Uint32(b[:])
}

// sourceAddr returns the local address the i-th connection binds to when spreading: one of
// 127.0.0.2-127.0.0.251, so 250 source addresses each have the full ephemeral port range.
func sourceAddr(i int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%250))}
}

// isLoopback reports whether addr (host:port) names an IPv4 loopback address or "localhost".
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.To4() != nil && ip.IsLoopback()
}
