// Command idlemem measures a broker's resident memory per 1,000 idle MQTT connections.
//
//	go run ./scripts/idlemem -n 10000 -- ./iotd --listen 127.0.0.1:{port}
//	go run ./scripts/idlemem -n 10000 -- mosquitto -p {port}
//
// It starts the broker command ({port} is replaced by a free port), waits until it accepts
// connections, reads its VmRSS from /proc, opens n connections (source addresses spread over
// 127.0.0.2-127.0.0.251, CONNECT with clean session and keep-alive 300), waits for every CONNACK,
// lets the broker settle, reads VmRSS again and prints the figures. The broker is stopped with
// SIGINT at the end. Connections are opened by a bounded number of workers and every wait has a
// deadline, so the run ends by itself.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/iotd/iotd/internal/packet"
)

type result struct {
	Broker         string  `json:"broker"`
	Conns          int     `json:"conns"`
	RSSBaseMiB     float64 `json:"rss_base_mib"`
	RSSMiB         float64 `json:"rss_mib"`
	PerThousandMiB float64 `json:"delta_mib_per_1000"`
	ConnsPerSec    float64 `json:"conns_per_sec"`
}

func main() {
	n := flag.Int("n", 10000, "connections to open")
	workers := flag.Int("workers", 64, "concurrent dialers")
	settle := flag.Duration("settle", 3*time.Second, "time to let the broker settle before the second reading")
	asJSON := flag.Bool("json", false, "print the result as JSON")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: idlemem [-n N] -- BROKER-COMMAND ARGS ({port} is replaced)")
		os.Exit(2)
	}
	res, err := measure(flag.Args(), *n, *workers, *settle)
	if err != nil {
		fmt.Fprintln(os.Stderr, "idlemem:", err)
		os.Exit(1)
	}
	if *asJSON {
		json.NewEncoder(os.Stdout).Encode(res)
		return
	}
	fmt.Printf("%s: %d idle connections: RSS %.1f MiB (base %.1f MiB), %.3f MiB per 1,000 above base, %.0f connections/s\n",
		res.Broker, res.Conns, res.RSSMiB, res.RSSBaseMiB, res.PerThousandMiB, res.ConnsPerSec)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func rssKiB(pid int) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, errors.New("no VmRSS line")
}

func measure(argv []string, n, workers int, settle time.Duration) (*result, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := make([]string, len(argv))
	for i, a := range argv {
		args[i] = strings.ReplaceAll(a, "{port}", strconv.Itoa(port))
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("broker not accepting on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // let the broker finish starting before the baseline
	base, err := rssKiB(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}

	conns := make([]net.Conn, n)
	var next atomic.Int64
	var firstErr error
	var errMu sync.Mutex
	var wg sync.WaitGroup
	started := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := dialOne(addr, i)
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("connection %d: %w", i, err)
					}
					errMu.Unlock()
					next.Store(int64(n)) // stop the others
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(started)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if firstErr != nil {
		return nil, firstErr
	}
	time.Sleep(settle) // idle connections, by definition: nothing to synchronise with
	rss, err := rssKiB(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	return &result{
		Broker:         args[0],
		Conns:          n,
		RSSBaseMiB:     float64(base) / 1024,
		RSSMiB:         float64(rss) / 1024,
		PerThousandMiB: float64(rss-base) / 1024 / (float64(n) / 1000),
		ConnsPerSec:    float64(n) / elapsed.Seconds(),
	}, nil
}

func dialOne(addr string, i int) (net.Conn, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(2+i%250))}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	cp := packet.Connect{ProtocolName: "MQTT", ProtocolLevel: packet.Version311, CleanSession: true, KeepAlive: 300, ClientID: fmt.Sprintf("idle-%d", i)}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(cp.Append(nil)); err != nil {
		c.Close()
		return nil, err
	}
	p, err := packet.NewReader(c, 0).ReadPacket(packet.Version311)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("read CONNACK: %w", err)
	}
	if ack, ok := p.(*packet.Connack); !ok || ack.ReturnCode != packet.Accepted {
		c.Close()
		return nil, fmt.Errorf("got %T %+v, want CONNACK accepted", p, p)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
