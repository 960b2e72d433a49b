// Command compare runs IoTD and its peers (Mosquitto, mochi-mqtt, NATS with MQTT) through the
// standard scenarios of the performance issue on this machine and prints one Markdown table of
// medians with IoTD's ratio to each peer.
//
//	go run ./scripts/bench/compare                      # all brokers, all scenarios, 3 rounds
//	go run ./scripts/bench/compare --quick              # a seconds-long smoke run
//	go run ./scripts/bench/compare --brokers iotd,nats --scenarios fanin-q0,latency-q1
//	go run ./scripts/bench/compare --ceiling            # also the load generator's own ceiling
//
// Each broker runs as its own process on a free 127.0.0.1 port and is restarted for every
// scenario, so one scenario's leftovers (heap, queues, sessions) do not weigh on the next. The
// rounds alternate: each round and scenario starts with a different broker, so a slow drift of
// the machine does not always favour the same one. The load generator is internal/bench, in
// this process. While a scenario runs, the broker's resident memory and CPU time are sampled
// from /proc every 200 ms.
//
// Brokers:
//   - iotd: built from this repository (go build ./cmd/iotd), or --iotd PATH; --iotd-config
//     passes a TOML file, otherwise it runs with built-in defaults.
//   - mosquitto: the Debian package; scripts/bench/mosquitto.conf, whose listener port is
//     replaced by the chosen one.
//   - mochi: `go install github.com/mochi-mqtt/server/v2/cmd@v2.7.9`, found as "cmd" in
//     $(go env GOPATH)/bin (or --mochi PATH); its TCP, WebSocket and dashboard listeners all go
//     to free loopback ports.
//   - nats: `go install github.com/nats-io/nats-server/v2@v2.15.2`; a temporary configuration
//     with JetStream (file store in a temporary directory) and the MQTT listener.
//
// A broker that is not installed is reported as skipped, not as a failure.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/iotd/iotd/internal/bench"
	"github.com/iotd/iotd/internal/packet"
)

// config is what the flags select.
type config struct {
	brokers     []string
	scenarios   []string
	rounds      int
	quick       bool
	duration    time.Duration // throughput and latency scenarios
	drain       time.Duration
	maxDrain    time.Duration
	settle      time.Duration // idle connections: time between the last CONNACK and the RSS reading
	idle        []int
	fanoutSubs  int
	extraSubs   int
	latencyRate float64
	iotdBin     string
	iotdConfig  string
	iotdStore   string
	mochiBin    string
	natsBin     string
	mosqBin     string
	mosqConf    string
	jsonOut     string
	logDir      string
	progress    bool
	ceiling     bool
}

func main() {
	if len(os.Args) > 2 && os.Args[1] == "relay" {
		os.Exit(relayMain(os.Args[2]))
	}
	os.Exit(run())
}

func run() int {
	var c config
	var brokers, scenarios, idle string
	flag.StringVar(&brokers, "brokers", "iotd,mosquitto,mochi,nats", "comma-separated brokers to compare")
	flag.StringVar(&scenarios, "scenarios", "all", "comma-separated scenario ids, or all ("+strings.Join(scenarioIDs(), ",")+")")
	flag.IntVar(&c.rounds, "rounds", 3, "rounds; each figure is the median over them")
	flag.BoolVar(&c.quick, "quick", false, "seconds-long smoke run: small counts, 2 s scenarios, one round unless --rounds is given")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "length of each throughput and latency scenario")
	flag.DurationVar(&c.drain, "drain", 2*time.Second, "after publishing, stop waiting for deliveries after this long without one")
	flag.DurationVar(&c.maxDrain, "max-drain", time.Minute, "after publishing, stop waiting for deliveries after this long even while they arrive (the rest counts as lost)")
	flag.DurationVar(&c.settle, "settle", 2*time.Second, "idle connections: wait this long before reading the broker's RSS")
	flag.StringVar(&idle, "idle", "10000,19000", "idle connection counts")
	flag.IntVar(&c.fanoutSubs, "fanout-subs", 1000, "subscribers in the fan-out scenario")
	flag.IntVar(&c.extraSubs, "extra-subs", 100000, "wildcard subscriptions installed in the subs100k scenario")
	flag.Float64Var(&c.latencyRate, "latency-rate", 5000, "messages per second in the latency scenarios")
	flag.StringVar(&c.iotdBin, "iotd", "", "iotd binary (default: build ./cmd/iotd into a temporary directory)")
	flag.StringVar(&c.iotdStore, "iotd-store", "memory", "iotd store backend (memory, file or sqlite); the peers run without persistence, so memory compares like with like")
	flag.StringVar(&c.iotdConfig, "iotd-config", "", "TOML configuration passed to iotd with -c (its listeners are replaced)")
	flag.StringVar(&c.mochiBin, "mochi", "", "mochi-mqtt binary (default: cmd in $(go env GOPATH)/bin)")
	flag.StringVar(&c.natsBin, "nats", "", "nats-server binary (default: PATH, then $(go env GOPATH)/bin)")
	flag.StringVar(&c.mosqBin, "mosquitto", "", "mosquitto binary (default: PATH, then /usr/sbin)")
	flag.StringVar(&c.mosqConf, "mosquitto-conf", "", "Mosquitto configuration (default scripts/bench/mosquitto.conf of this repository)")
	flag.StringVar(&c.jsonOut, "json", "", "also write every measurement and the medians as JSON to this file (- for stdout)")
	flag.StringVar(&c.logDir, "logs", "", "directory for the brokers' logs (default: a new temporary directory, kept)")
	flag.BoolVar(&c.progress, "progress", false, "show the load generator's progress lines")
	flag.BoolVar(&c.ceiling, "ceiling", false, "also run the load generator against a trivial relay to show its own ceiling")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })

	c.brokers = splitList(brokers)
	for _, b := range c.brokers {
		if _, ok := brokerDefs[b]; !ok {
			fmt.Fprintf(os.Stderr, "compare: unknown broker %q (known: iotd, mosquitto, mochi, nats)\n", b)
			return 2
		}
	}
	if scenarios == "all" {
		c.scenarios = scenarioIDs()
	} else {
		c.scenarios = splitList(scenarios)
		for _, s := range c.scenarios {
			if scenarioByID(s) == nil {
				fmt.Fprintf(os.Stderr, "compare: unknown scenario %q (known: %s)\n", s, strings.Join(scenarioIDs(), ", "))
				return 2
			}
		}
	}
	for _, s := range splitList(idle) {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "compare: --idle %q: want positive counts\n", idle)
			return 2
		}
		c.idle = append(c.idle, n)
	}
	if c.quick {
		quick := map[string]func(){
			"rounds":      func() { c.rounds = 1 },
			"duration":    func() { c.duration = 2 * time.Second },
			"drain":       func() { c.drain = 500 * time.Millisecond },
			"max-drain":   func() { c.maxDrain = 10 * time.Second },
			"settle":      func() { c.settle = 500 * time.Millisecond },
			"idle":        func() { c.idle = []int{1000, 2000} },
			"fanout-subs": func() { c.fanoutSubs = 100 },
			"extra-subs":  func() { c.extraSubs = 10000 },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	if c.rounds < 1 {
		fmt.Fprintln(os.Stderr, "compare: --rounds must be at least 1")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := bench.RaiseFileLimit(); err != nil {
		fmt.Fprintf(os.Stderr, "compare: cannot raise the open file limit: %v\n", err)
	}
	if c.logDir == "" {
		dir, err := os.MkdirTemp("", "iotd-compare-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "compare:", err)
			return 1
		}
		c.logDir = dir
	}
	fmt.Fprintf(os.Stderr, "compare: broker logs in %s\n", c.logDir)

	rep := &report{Machine: machineInfo(), Config: describeConfig(&c), Skipped: map[string]string{}}
	var avail []*brokerRun
	for _, name := range c.brokers {
		br, err := prepare(ctx, name, &c)
		if err != nil {
			fmt.Fprintf(os.Stderr, "compare: %s skipped: %v\n", name, err)
			rep.Skipped[name] = err.Error()
			continue
		}
		rep.Versions = append(rep.Versions, name+": "+br.version)
		avail = append(avail, br)
	}
	if len(avail) == 0 {
		fmt.Fprintln(os.Stderr, "compare: no broker available")
		return 1
	}

	for round := 0; round < c.rounds && ctx.Err() == nil; round++ {
		for si, id := range c.scenarios {
			sc := scenarioByID(id)
			for k := range avail {
				if ctx.Err() != nil {
					break
				}
				br := avail[(k+round+si)%len(avail)]
				res := runOne(ctx, &c, br, sc, round+1)
				rep.Runs = append(rep.Runs, res)
				fmt.Fprintf(os.Stderr, "compare: round %d %-10s %-10s %s\n", round+1, sc.id, br.name, res.brief())
			}
		}
	}
	if c.ceiling && ctx.Err() == nil {
		rep.Ceiling = runCeiling(ctx, &c)
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "compare: interrupted; the table covers the runs that finished")
	}
	rep.summarise(c.brokers)
	rep.writeMarkdown(os.Stdout)
	if c.jsonOut != "" {
		w := io.Writer(os.Stdout)
		if c.jsonOut != "-" {
			f, err := os.Create(c.jsonOut)
			if err != nil {
				fmt.Fprintln(os.Stderr, "compare:", err)
				return 1
			}
			defer f.Close()
			w = f
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(os.Stderr, "compare:", err)
			return 1
		}
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// ---------------------------------------------------------------------------------------------
// Brokers

// brokerRun is an installed broker, ready to be started.
type brokerRun struct {
	name    string
	bin     string
	version string
	// args returns the command line for a broker listening on port; dir is a fresh directory
	// for its files.
	args func(port int, dir string) ([]string, error)
}

type brokerDef func(ctx context.Context, c *config) (*brokerRun, error)

var brokerDefs = map[string]brokerDef{
	"iotd":      prepareIotd,
	"mosquitto": prepareMosquitto,
	"mochi":     prepareMochi,
	"nats":      prepareNats,
}

func prepare(ctx context.Context, name string, c *config) (*brokerRun, error) {
	br, err := brokerDefs[name](ctx, c)
	if err != nil {
		return nil, err
	}
	br.name = name
	return br, nil
}

// repoRoot is the directory of this module's go.mod.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the iotd module (run from the repository)")
	}
	return filepath.Dir(mod), nil
}

func gopathBin(name string) string {
	out, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		return ""
	}
	p := filepath.Join(strings.TrimSpace(strings.Split(string(out), string(os.PathListSeparator))[0]), "bin", name)
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

func prepareIotd(ctx context.Context, c *config) (*brokerRun, error) {
	bin := c.iotdBin
	version := "given binary"
	if bin == "" {
		root, err := repoRoot()
		if err != nil {
			return nil, err
		}
		bin = filepath.Join(c.logDir, "iotd")
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/iotd")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go build ./cmd/iotd: %v\n%s", err, out)
		}
		version = "built from " + root
		if out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output(); err == nil {
			version += " at " + strings.TrimSpace(string(out))
		}
	}
	return &brokerRun{bin: bin, version: version, args: func(port int, dir string) ([]string, error) {
		args := []string{"--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", filepath.Join(dir, "iotd-data")}
		if c.iotdStore != "" {
			args = append(args, "--store", c.iotdStore)
		}
		if c.iotdConfig != "" {
			args = append([]string{"-c", c.iotdConfig}, args...)
		}
		return args, nil
	}}, nil
}

func prepareMosquitto(_ context.Context, c *config) (*brokerRun, error) {
	bin := c.mosqBin
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("mosquitto"); err != nil {
			if _, serr := os.Stat("/usr/sbin/mosquitto"); serr != nil {
				return nil, errors.New("not installed (apt-get install mosquitto)")
			}
			bin = "/usr/sbin/mosquitto"
		}
	}
	conf := c.mosqConf
	if conf == "" {
		root, err := repoRoot()
		if err != nil {
			return nil, err
		}
		conf = filepath.Join(root, "scripts", "bench", "mosquitto.conf")
	}
	text, err := os.ReadFile(conf)
	if err != nil {
		return nil, err
	}
	version := "mosquitto"
	if out, _ := exec.Command(bin, "-h").CombinedOutput(); len(out) > 0 {
		version = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	return &brokerRun{bin: bin, version: version, args: func(port int, dir string) ([]string, error) {
		var b strings.Builder
		replaced := false
		for _, line := range strings.Split(string(text), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "listener" && !replaced {
				line = fmt.Sprintf("listener %d 127.0.0.1", port)
				replaced = true
			}
			b.WriteString(line + "\n")
		}
		if !replaced {
			return nil, fmt.Errorf("%s has no listener line", conf)
		}
		path := filepath.Join(dir, "mosquitto.conf")
		if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
			return nil, err
		}
		return []string{"-c", path}, nil
	}}, nil
}

func prepareMochi(_ context.Context, c *config) (*brokerRun, error) {
	bin := c.mochiBin
	if bin == "" {
		bin = gopathBin("cmd")
	}
	if bin == "" {
		return nil, errors.New("not installed (go install github.com/mochi-mqtt/server/v2/cmd@v2.7.9)")
	}
	// "cmd" is a generic name: make sure this one is mochi's, whose usage lists these flags.
	out, _ := exec.Command(bin, "-h").CombinedOutput()
	if !strings.Contains(string(out), "-tcp") || !strings.Contains(string(out), "-ws") || !strings.Contains(string(out), "-info") {
		return nil, fmt.Errorf("%s does not look like mochi-mqtt's cmd (no -tcp/-ws/-info flags)", bin)
	}
	version := "mochi-mqtt server/v2 cmd"
	if v, err := exec.Command("go", "version", "-m", bin).Output(); err == nil {
		for _, line := range strings.Split(string(v), "\n") {
			if f := strings.Fields(line); len(f) >= 3 && f[0] == "mod" {
				version = f[1] + " " + f[2]
			}
		}
	}
	return &brokerRun{bin: bin, version: version, args: func(port int, dir string) ([]string, error) {
		ws, err := freePort()
		if err != nil {
			return nil, err
		}
		info, err := freePort()
		if err != nil {
			return nil, err
		}
		return []string{
			"-tcp", fmt.Sprintf("127.0.0.1:%d", port),
			"-ws", fmt.Sprintf("127.0.0.1:%d", ws),
			"-info", fmt.Sprintf("127.0.0.1:%d", info),
		}, nil
	}}, nil
}

func prepareNats(_ context.Context, c *config) (*brokerRun, error) {
	bin := c.natsBin
	if bin == "" {
		if p, err := exec.LookPath("nats-server"); err == nil {
			bin = p
		} else {
			bin = gopathBin("nats-server")
		}
	}
	if bin == "" {
		return nil, errors.New("not installed (go install github.com/nats-io/nats-server/v2@v2.15.2)")
	}
	version := "nats-server"
	if out, err := exec.Command(bin, "--version").Output(); err == nil {
		version = strings.TrimSpace(string(out))
	}
	return &brokerRun{bin: bin, version: version, args: func(port int, dir string) ([]string, error) {
		client, err := freePort()
		if err != nil {
			return nil, err
		}
		store := filepath.Join(dir, "jetstream")
		// MQTT in NATS needs JetStream (sessions, retained and QoS 1/2 messages live in streams)
		// and a server name.
		conf := fmt.Sprintf("server_name: iotd_compare\nlisten: 127.0.0.1:%d\njetstream {\n  store_dir: %q\n}\nmqtt {\n  listen: 127.0.0.1:%d\n}\n",
			client, store, port)
		path := filepath.Join(dir, "nats.conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			return nil, err
		}
		return []string{"-c", path}, nil
	}}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// process is a running broker.
type process struct {
	cmd    *exec.Cmd
	addr   string
	log    *os.File
	exited chan struct{}
}

func start(ctx context.Context, br *brokerRun, dir string) (*process, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args, err := br.args(port, dir)
	if err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, br.name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(br.bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Dir = dir
	// If this program dies, so does the broker.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	p := &process{cmd: cmd, addr: fmt.Sprintf("127.0.0.1:%d", port), log: log, exited: make(chan struct{})}
	go func() { cmd.Wait(); close(p.exited) }()
	if err := waitReady(ctx, p); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// waitReady waits until the broker accepts an MQTT connection: a TCP accept alone is not enough
// (NATS accepts before JetStream is ready).
func waitReady(ctx context.Context, p *process) error {
	deadline := time.Now().Add(30 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("exited during start-up (%v); see %s", p.cmd.ProcessState, p.log.Name())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if last = mqttPing(p.addr); last == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("not ready after 30 s: %v", last)
}

func mqttPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	cp := packet.Connect{ProtocolName: "MQTT", ProtocolLevel: packet.Version311, CleanSession: true, KeepAlive: 10, ClientID: "compare-ready"}
	if _, err := c.Write(cp.Append(nil)); err != nil {
		return err
	}
	p, err := packet.NewReader(c, 0).ReadPacket(packet.Version311)
	if err != nil {
		return err
	}
	if ack, ok := p.(*packet.Connack); !ok || ack.ReturnCode != packet.Accepted {
		return fmt.Errorf("got %T %+v, want CONNACK accepted", p, p)
	}
	c.Write((&packet.Disconnect{}).Append(nil))
	return nil
}

func (p *process) stop() {
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.exited:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
	p.log.Close()
}

// ---------------------------------------------------------------------------------------------
// /proc sampling

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat: 100 on every Linux
// architecture Go supports.
const clockTicks = 100

func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces: count from after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

func procRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// sampler records a process's peak RSS and its CPU time over a window.
type sampler struct {
	pid     int
	t0      time.Time
	cpu0    time.Duration
	mu      sync.Mutex
	peakRSS int64
	stopCh  chan struct{}
	done    chan struct{}
}

func startSampler(pid int) *sampler {
	s := &sampler{pid: pid, t0: time.Now(), stopCh: make(chan struct{}), done: make(chan struct{})}
	s.cpu0, _ = procCPU(pid)
	go func() {
		defer close(s.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			s.sample()
			select {
			case <-s.stopCh:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *sampler) sample() {
	if rss, err := procRSS(s.pid); err == nil {
		s.mu.Lock()
		s.peakRSS = max(s.peakRSS, rss)
		s.mu.Unlock()
	}
}

// stop ends sampling and returns the peak RSS in MiB and the CPU use in percent of one core.
func (s *sampler) stop() (peakMiB, cpuPct float64) {
	s.sample()
	cpu, _ := procCPU(s.pid)
	close(s.stopCh)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return float64(s.peakRSS) / (1 << 20), 100 * (cpu - s.cpu0).Seconds() / time.Since(s.t0).Seconds()
}

// ---------------------------------------------------------------------------------------------
// Scenarios

// metric is one figure of a scenario.
type metric struct {
	key    string
	label  string
	unit   string // "rate", "mib", "us", "pct", "count"
	higher bool   // higher is better; false: lower is better
	ratio  bool   // show IoTD's ratio to each peer
}

type scenario struct {
	id      string
	title   string
	metrics []metric
	run     func(ctx context.Context, c *config, addr string, pid int) (map[string]float64, *bench.Summary, error)
}

var (
	mDelivered = metric{key: "delivered_per_s", label: "delivered/s", unit: "rate", higher: true, ratio: true}
	mLostPct   = metric{key: "lost_pct", label: "lost %", unit: "pct"}
	mLost      = metric{key: "lost", label: "lost (QoS 1/2: must be 0)", unit: "count"}
	mP50       = metric{key: "p50_us", label: "p50", unit: "us", ratio: true}
	mP99       = metric{key: "p99_us", label: "p99", unit: "us", ratio: true}
)

func scenarios() []*scenario {
	var out []*scenario
	out = append(out, idleScenario(0, "idle-10k"), idleScenario(1, "idle-19k"))
	fanin := func(qos packet.QoS) *scenario {
		ms := []metric{mDelivered, mLostPct}
		if qos > 0 {
			ms = append(ms, mLost)
		}
		return &scenario{
			id:      fmt.Sprintf("fanin-q%d", qos),
			title:   fmt.Sprintf("fan-in QoS %d, 4 publishers → 1 subscriber on bench/#, max rate", qos),
			metrics: ms,
			run: func(ctx context.Context, c *config, addr string, _ int) (map[string]float64, *bench.Summary, error) {
				return throughput(ctx, c, bench.ScenarioOptions{
					Target: target(c, addr),
					Pub:    bench.Publishers{Count: 4, QoS: qos, Inflight: 64},
					Sub:    bench.Subscribers{Count: 1, QoS: qos, Filter: "bench/#"},
				})
			},
		}
	}
	out = append(out, fanin(0), fanin(1), fanin(2))
	out = append(out, &scenario{
		id:      "fanout",
		title:   "fan-out QoS 0, 1 publisher → N subscribers on bench/fan, max rate",
		metrics: []metric{mDelivered, mLostPct},
		run: func(ctx context.Context, c *config, addr string, _ int) (map[string]float64, *bench.Summary, error) {
			return throughput(ctx, c, bench.ScenarioOptions{
				Target: target(c, addr),
				Pub:    bench.Publishers{Count: 1, Topic: "bench/fan"},
				Sub:    bench.Subscribers{Count: c.fanoutSubs, Filter: "bench/fan"},
			})
		},
	})
	latency := func(qos packet.QoS) *scenario {
		return &scenario{
			id:      fmt.Sprintf("latency-q%d", qos),
			title:   fmt.Sprintf("latency QoS %d, 1 publisher at a fixed rate → 1 subscriber", qos),
			metrics: []metric{mP50, mP99, {key: "max_us", label: "max", unit: "us"}},
			run: func(ctx context.Context, c *config, addr string, _ int) (map[string]float64, *bench.Summary, error) {
				return throughput(ctx, c, bench.ScenarioOptions{
					Target: target(c, addr),
					Pub:    bench.Publishers{Count: 1, QoS: qos, Rate: c.latencyRate},
					Sub:    bench.Subscribers{Count: 1, QoS: qos},
				})
			},
		}
	}
	out = append(out, latency(0), latency(1))
	out = append(out, &scenario{
		id:      "subs100k",
		title:   "wildcard subscriptions installed (bench/x<i>/+/#, none matching), then fan-in QoS 0 4 → 1",
		metrics: []metric{mDelivered, mLostPct, {key: "subscribe_per_s", label: "subscriptions/s while installing", unit: "rate", higher: true, ratio: true}},
		run: func(ctx context.Context, c *config, addr string, _ int) (map[string]float64, *bench.Summary, error) {
			return throughput(ctx, c, bench.ScenarioOptions{
				Target:    target(c, addr),
				Pub:       bench.Publishers{Count: 4},
				Sub:       bench.Subscribers{Count: 1, Filter: "bench/#"},
				ExtraSubs: c.extraSubs,
			})
		},
	})
	return out
}

// idleScenario is the idx-th idle-connection scenario: its count is the idx-th of --idle
// (10,000 and 19,000 by default; the id keeps the standard name).
func idleScenario(idx int, id string) *scenario {
	return &scenario{
		id:    id,
		title: "idle connections",
		metrics: []metric{
			{key: "mib_per_1000", label: "RSS MiB per 1,000 connections", unit: "mib", ratio: true},
			{key: "conn_per_s", label: "connections/s", unit: "rate", higher: true, ratio: true},
		},
		run: func(ctx context.Context, c *config, addr string, pid int) (map[string]float64, *bench.Summary, error) {
			if idx >= len(c.idle) {
				return nil, nil, fmt.Errorf("--idle has no count number %d", idx+1)
			}
			count := c.idle[idx]
			base, err := procRSS(pid)
			if err != nil {
				return nil, nil, err
			}
			t := target(c, addr)
			t.KeepAlive = 300 * time.Second // idle: no pings while measured
			set, err := bench.OpenConns(ctx, bench.ConnOptions{Target: t, Count: count})
			if err != nil {
				return nil, nil, err
			}
			sleepCtx(ctx, c.settle) // idle by definition: nothing to wait for but the broker's own settling
			rss, rerr := procRSS(pid)
			sum := set.Close()
			if rerr != nil {
				return nil, sum, rerr
			}
			m := map[string]float64{
				"connections":  float64(sum.Connections.Connected),
				"mib_per_1000": float64(rss-base) / (1 << 20) / (float64(count) / 1000),
				"conn_per_s":   sum.Connections.PerSecond,
				"rss_mib":      float64(rss) / (1 << 20),
			}
			return m, sum, nil
		},
	}
}

func scenarioIDs() []string {
	var ids []string
	for _, s := range scenarios() {
		ids = append(ids, s.id)
	}
	return ids
}

func scenarioByID(id string) *scenario {
	for _, s := range scenarios() {
		if s.id == id {
			return s
		}
	}
	return nil
}

func target(c *config, addr string) bench.Target {
	t := bench.Target{Addr: addr, Timeout: 30 * time.Second}
	if c.progress {
		t.Progress = os.Stderr
	}
	return t
}

func throughput(ctx context.Context, c *config, o bench.ScenarioOptions) (map[string]float64, *bench.Summary, error) {
	o.Duration, o.Drain, o.MaxDrain = c.duration, c.drain, c.maxDrain
	sum, err := bench.RunScenario(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	m := map[string]float64{
		"sent_per_s":      sum.SentPerSec,
		"delivered_per_s": sum.ReceivedPerSec,
		"lost":            float64(sum.Lost),
		"lost_pct":        sum.LostPct,
		"duplicates":      float64(sum.Duplicates),
		"p50_us":          sum.Latency.P50,
		"p99_us":          sum.Latency.P99,
		"max_us":          sum.Latency.Max,
	}
	if sum.ExtraSubscriptions > 0 {
		m["subscribe_per_s"] = sum.SubscribePerSec
	}
	return m, sum, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// ---------------------------------------------------------------------------------------------
// Runs and the report

// result is one scenario run against one broker.
type result struct {
	Broker       string             `json:"broker"`
	Scenario     string             `json:"scenario"`
	Round        int                `json:"round"`
	Metrics      map[string]float64 `json:"metrics,omitempty"`
	BrokerCPU    float64            `json:"broker_cpu_pct"`
	BrokerRSS    float64            `json:"broker_peak_rss_mib"`
	BenchCPU     float64            `json:"bench_cpu_pct"`
	Errors       uint64             `json:"errors"`
	ErrorSamples []string           `json:"error_samples,omitempty"`
	Failed       string             `json:"failed,omitempty"`
	Summary      *bench.Summary     `json:"summary,omitempty"`
}

func (r *result) brief() string {
	if r.Failed != "" {
		return "FAILED: " + r.Failed
	}
	var keys []string
	for k := range r.Metrics {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%.4g ", k, r.Metrics[k])
	}
	fmt.Fprintf(&b, "broker_cpu=%.0f%% peak_rss=%.1fMiB bench_cpu=%.0f%% errors=%d", r.BrokerCPU, r.BrokerRSS, r.BenchCPU, r.Errors)
	if len(r.ErrorSamples) > 0 {
		fmt.Fprintf(&b, " first_error=%q", r.ErrorSamples[0])
	}
	return b.String()
}

func runOne(ctx context.Context, c *config, br *brokerRun, sc *scenario, round int) *result {
	res := &result{Broker: br.name, Scenario: sc.id, Round: round}
	dir := filepath.Join(c.logDir, fmt.Sprintf("r%d-%s-%s", round, sc.id, br.name))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.Failed = err.Error()
		return res
	}
	p, err := start(ctx, br, dir)
	if err != nil {
		res.Failed = "start: " + err.Error()
		return res
	}
	defer p.stop()
	time.Sleep(300 * time.Millisecond) // let the broker finish starting before the baseline
	smp := startSampler(p.cmd.Process.Pid)
	m, sum, err := sc.run(ctx, c, p.addr, p.cmd.Process.Pid)
	res.BrokerRSS, res.BrokerCPU = smp.stop()
	if err != nil {
		res.Failed = err.Error()
		return res
	}
	select {
	case <-p.exited:
		res.Failed = fmt.Sprintf("broker exited during the run (%v); see %s", p.cmd.ProcessState, p.log.Name())
	default:
	}
	res.Metrics, res.Summary = m, sum
	if sum != nil {
		res.BenchCPU = sum.CPU.Percent
		res.Errors = sum.Errors
		res.ErrorSamples = sum.ErrorSamples
	}
	return res
}

// report is everything one invocation measured.
type report struct {
	Date     string                       `json:"date"`
	Machine  map[string]string            `json:"machine"`
	Config   map[string]string            `json:"config"`
	Versions []string                     `json:"versions"`
	Skipped  map[string]string            `json:"skipped,omitempty"`
	Runs     []*result                    `json:"runs"`
	Medians  map[string]map[string]median `json:"medians"` // scenario → broker → figures
	Ceiling  []*ceilingResult             `json:"ceiling,omitempty"`
	brokers  []string
}

// median holds the medians of one scenario on one broker.
type median struct {
	Metrics   map[string]float64 `json:"metrics"`
	BrokerCPU float64            `json:"broker_cpu_pct"`
	BrokerRSS float64            `json:"broker_peak_rss_mib"`
	BenchCPU  float64            `json:"bench_cpu_pct"`
	Rounds    int                `json:"rounds"` // rounds that produced figures
	Failures  []string           `json:"failures,omitempty"`
	Errors    uint64             `json:"errors"`
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (rep *report) summarise(brokers []string) {
	rep.Date = time.Now().UTC().Format("2006-01-02 15:04 MST")
	rep.brokers = brokers
	rep.Medians = map[string]map[string]median{}
	type acc struct {
		metrics            map[string][]float64
		cpu, rss, benchCPU []float64
		failures           []string
		errors             uint64
	}
	accs := map[[2]string]*acc{}
	for _, r := range rep.Runs {
		k := [2]string{r.Scenario, r.Broker}
		a := accs[k]
		if a == nil {
			a = &acc{metrics: map[string][]float64{}}
			accs[k] = a
		}
		a.errors += r.Errors
		if r.Failed != "" {
			a.failures = append(a.failures, fmt.Sprintf("round %d: %s", r.Round, r.Failed))
			continue
		}
		for key, v := range r.Metrics {
			a.metrics[key] = append(a.metrics[key], v)
		}
		a.cpu = append(a.cpu, r.BrokerCPU)
		a.rss = append(a.rss, r.BrokerRSS)
		a.benchCPU = append(a.benchCPU, r.BenchCPU)
		if r.Errors > 0 {
			a.failures = append(a.failures, fmt.Sprintf("round %d: %d errors, first: %s", r.Round, r.Errors, strings.Join(r.ErrorSamples[:min(1, len(r.ErrorSamples))], "")))
		}
	}
	for k, a := range accs {
		m := median{Metrics: map[string]float64{}, Failures: a.failures, Errors: a.errors, Rounds: len(a.cpu)}
		for key, vs := range a.metrics {
			m.Metrics[key] = medianOf(vs)
		}
		m.BrokerCPU, m.BrokerRSS, m.BenchCPU = medianOf(a.cpu), medianOf(a.rss), medianOf(a.benchCPU)
		if rep.Medians[k[0]] == nil {
			rep.Medians[k[0]] = map[string]median{}
		}
		rep.Medians[k[0]][k[1]] = m
	}
}

func format(unit string, v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	switch unit {
	case "rate":
		switch {
		case v >= 1e6:
			return fmt.Sprintf("%.2fM", v/1e6)
		case v >= 1e3:
			return fmt.Sprintf("%.0fk", v/1e3)
		}
		return fmt.Sprintf("%.0f", v)
	case "mib":
		return fmt.Sprintf("%.2f", v)
	case "us":
		if v >= 1000 {
			return fmt.Sprintf("%.2f ms", v/1000)
		}
		return fmt.Sprintf("%.0f µs", v)
	case "pct":
		return fmt.Sprintf("%.1f %%", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func (rep *report) value(sc, broker, key string) float64 {
	m, ok := rep.Medians[sc][broker]
	if !ok {
		return math.NaN()
	}
	v, ok := m.Metrics[key]
	if !ok {
		return math.NaN()
	}
	return v
}

func (rep *report) writeMarkdown(w io.Writer) {
	var present []string
	for _, b := range rep.brokers {
		if _, skipped := rep.Skipped[b]; !skipped {
			present = append(present, b)
		}
	}
	var peers []string
	for _, b := range present {
		if b != "iotd" {
			peers = append(peers, b)
		}
	}
	hasIotd := slices.Contains(present, "iotd")

	fmt.Fprintf(w, "Measured %s on %s (%s CPUs, %s RAM), %s.\n\n", rep.Date, rep.Machine["cpu"], rep.Machine["nproc"], rep.Machine["memory"], rep.Config["summary"])
	fmt.Fprint(w, "| scenario | figure |")
	for _, b := range present {
		fmt.Fprintf(w, " %s |", b)
	}
	if hasIotd {
		for _, p := range peers {
			fmt.Fprintf(w, " iotd vs %s |", p)
		}
	}
	fmt.Fprint(w, "\n|---|---|")
	for range present {
		fmt.Fprint(w, "---:|")
	}
	if hasIotd {
		for range peers {
			fmt.Fprint(w, "---:|")
		}
	}
	fmt.Fprintln(w)
	var ids []string
	for _, r := range rep.Runs {
		if !slices.Contains(ids, r.Scenario) {
			ids = append(ids, r.Scenario)
		}
	}
	for _, id := range ids {
		sc := scenarioByID(id)
		for _, m := range sc.metrics {
			label := m.label
			if m.ratio {
				if m.higher {
					label += " (higher is better)"
				} else {
					label += " (lower is better)"
				}
			}
			fmt.Fprintf(w, "| %s | %s |", scenarioLabel(rep, id), label)
			for _, b := range present {
				cell := format(m.unit, rep.value(id, b, m.key))
				if med, ok := rep.Medians[id][b]; ok && (len(med.Failures) > 0) {
					cell += " ⚠"
				}
				fmt.Fprintf(w, " %s |", cell)
			}
			if hasIotd {
				for _, p := range peers {
					fmt.Fprintf(w, " %s |", ratio(m, rep.value(id, "iotd", m.key), rep.value(id, p, m.key)))
				}
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w, "\nRatios are IoTD's advantage: above 1× IoTD is better, whichever way the figure goes.")
	for _, id := range ids {
		if slices.ContainsFunc(present, func(b string) bool { return len(rep.Medians[id][b].Failures) > 0 }) {
			fmt.Fprintln(w, "⚠ marks a broker that failed or reported errors in at least one round (see below).")
			break
		}
	}

	fmt.Fprintln(w, "\nBroker CPU (percent of one core, median over the scenario) / peak RSS (MiB) / load generator CPU:")
	fmt.Fprint(w, "\n| scenario |")
	for _, b := range present {
		fmt.Fprintf(w, " %s |", b)
	}
	fmt.Fprint(w, "\n|---|")
	for range present {
		fmt.Fprint(w, "---:|")
	}
	fmt.Fprintln(w)
	for _, id := range ids {
		fmt.Fprintf(w, "| %s |", scenarioLabel(rep, id))
		for _, b := range present {
			med, ok := rep.Medians[id][b]
			if !ok || med.Rounds == 0 {
				fmt.Fprint(w, " — |")
				continue
			}
			fmt.Fprintf(w, " %.0f %% / %.0f MiB / %.0f %% |", med.BrokerCPU, med.BrokerRSS, med.BenchCPU)
		}
		fmt.Fprintln(w)
	}

	var notes []string
	for _, id := range ids {
		for _, b := range present {
			if med, ok := rep.Medians[id][b]; ok {
				for _, f := range med.Failures {
					notes = append(notes, fmt.Sprintf("- %s on %s: %s", id, b, f))
				}
			}
		}
	}
	for b, why := range rep.Skipped {
		notes = append(notes, fmt.Sprintf("- %s skipped: %s", b, why))
	}
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nFailures and errors:")
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
	fmt.Fprintln(w, "\nVersions:")
	fmt.Fprintln(w)
	for _, v := range rep.Versions {
		fmt.Fprintf(w, "- %s\n", v)
	}
	if len(rep.Ceiling) > 0 {
		fmt.Fprintln(w, "\nLoad generator ceiling (against a relay that does no MQTT work; see --ceiling):")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| run | sent/s | delivered/s | generator CPU | generator CPU µs per message |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
		for _, c := range rep.Ceiling {
			fmt.Fprintf(w, "| %s | %s | %s | %.0f %% | %.2f |\n", c.Name, format("rate", c.SentPerSec), format("rate", c.DeliveredPerSec), c.BenchCPU, c.CPUPerMessageUs)
		}
	}
}

func scenarioLabel(rep *report, id string) string {
	switch id {
	case "idle-10k", "idle-19k":
		return fmt.Sprintf("idle %s conns", rep.Config["idle-"+id[5:]])
	case "fanout":
		return fmt.Sprintf("fan-out 1→%s QoS 0", rep.Config["fanout_subs"])
	case "fanin-q0", "fanin-q1", "fanin-q2":
		return "fan-in 4→1 QoS " + id[len(id)-1:]
	case "latency-q0", "latency-q1":
		return fmt.Sprintf("latency %s msg/s QoS %s", rep.Config["latency_rate"], id[len(id)-1:])
	case "subs100k":
		return fmt.Sprintf("%s wildcard subs + fan-in QoS 0", rep.Config["extra_subs"])
	}
	return id
}

func ratio(m metric, iotd, peer float64) string {
	if !m.ratio || math.IsNaN(iotd) || math.IsNaN(peer) || iotd <= 0 || peer <= 0 {
		return ""
	}
	r := iotd / peer
	if !m.higher {
		r = peer / iotd
	}
	return fmt.Sprintf("%.2f×", r)
}

func machineInfo() map[string]string {
	m := map[string]string{"nproc": strconv.Itoa(runtime.NumCPU()), "go": runtime.Version(), "os": runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
				m["memory"] = fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	return m
}

func describeConfig(c *config) map[string]string {
	idle := make([]string, len(c.idle))
	for i, n := range c.idle {
		idle[i] = strconv.Itoa(n)
	}
	m := map[string]string{
		"rounds":       strconv.Itoa(c.rounds),
		"duration":     c.duration.String(),
		"drain":        c.drain.String(),
		"max_drain":    c.maxDrain.String(),
		"settle":       c.settle.String(),
		"idle":         strings.Join(idle, ","),
		"fanout_subs":  strconv.Itoa(c.fanoutSubs),
		"extra_subs":   strconv.Itoa(c.extraSubs),
		"latency_rate": strconv.FormatFloat(c.latencyRate, 'f', -1, 64),
		"payload":      "64 bytes",
	}
	if len(c.idle) > 0 {
		m["idle-10k"] = strconv.Itoa(c.idle[0])
	}
	if len(c.idle) > 1 {
		m["idle-19k"] = strconv.Itoa(c.idle[1])
	}
	m["summary"] = fmt.Sprintf("%d round(s), medians, %v per throughput scenario, 64-byte payloads, all on 127.0.0.1", c.rounds, c.duration)
	return m
}

// ---------------------------------------------------------------------------------------------
// The load generator's ceiling

// ceilingResult is one run against the relay.
type ceilingResult struct {
	Name            string  `json:"name"`
	SentPerSec      float64 `json:"sent_per_s"`
	DeliveredPerSec float64 `json:"delivered_per_s"`
	BenchCPU        float64 `json:"bench_cpu_pct"`
	CPUPerMessageUs float64 `json:"bench_cpu_us_per_message"`
	Errors          uint64  `json:"errors"`
}

// runCeiling runs the generator against a relay process that answers CONNECT and SUBSCRIBE and
// copies PUBLISH packets from publishers to subscribers without looking inside them: whatever
// rate this reaches, the generator is not what limits a broker below it.
func runCeiling(ctx context.Context, c *config) []*ceilingResult {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "compare: ceiling:", err)
		return nil
	}
	br := &brokerRun{name: "relay", bin: self, args: func(port int, _ string) ([]string, error) {
		return []string{"relay", fmt.Sprintf("127.0.0.1:%d", port)}, nil
	}}
	runs := []struct {
		name string
		o    bench.ScenarioOptions
	}{
		{"4 publishers, no subscriber, QoS 0, max rate", bench.ScenarioOptions{Pub: bench.Publishers{Count: 4}, Sub: bench.Subscribers{Count: 0}}},
		{"fan-in 4 → 1, QoS 0, max rate", bench.ScenarioOptions{Pub: bench.Publishers{Count: 4}, Sub: bench.Subscribers{Count: 1}}},
		{fmt.Sprintf("fan-out 1 → %d, QoS 0, max rate", c.fanoutSubs), bench.ScenarioOptions{Pub: bench.Publishers{Count: 1, Topic: "bench/fan"}, Sub: bench.Subscribers{Count: c.fanoutSubs, Filter: "bench/fan"}}},
	}
	var out []*ceilingResult
	for _, r := range runs {
		dir := filepath.Join(c.logDir, "ceiling")
		os.MkdirAll(dir, 0o755)
		p, err := start(ctx, br, dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "compare: ceiling relay:", err)
			return out
		}
		o := r.o
		o.Target = target(c, p.addr)
		o.Duration, o.Drain, o.MaxDrain = c.duration, c.drain, c.maxDrain
		var sum *bench.Summary
		if o.Sub.Count == 0 {
			sum, err = bench.RunPub(ctx, bench.PubOptions{Target: o.Target, Publishers: o.Pub, Duration: o.Duration})
		} else {
			sum, err = bench.RunScenario(ctx, o)
		}
		p.stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "compare: ceiling:", err)
			continue
		}
		msgs := float64(sum.Sent + sum.Received)
		cr := &ceilingResult{Name: r.name, SentPerSec: sum.SentPerSec, DeliveredPerSec: sum.ReceivedPerSec, BenchCPU: sum.CPU.Percent, Errors: sum.Errors}
		if msgs > 0 {
			cr.CPUPerMessageUs = (sum.CPU.UserSeconds + sum.CPU.SystemSeconds) * 1e6 / msgs
		}
		fmt.Fprintf(os.Stderr, "compare: ceiling %s: sent %s/s delivered %s/s generator CPU %.0f%% errors %d\n", r.name, format("rate", cr.SentPerSec), format("rate", cr.DeliveredPerSec), cr.BenchCPU, cr.Errors)
		out = append(out, cr)
	}
	return out
}

// relayMain serves the relay on addr until SIGINT: CONNECT gets CONNACK, SUBSCRIBE gets SUBACK
// and makes the connection a subscriber of everything, PUBLISH (QoS 0) is copied to every
// subscriber as it came, PINGREQ gets PINGRESP.
func relayMain(addr string) int {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "relay:", err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() { <-sigs; ln.Close() }()
	rl := &relay{}
	for {
		c, err := ln.Accept()
		if err != nil {
			return 0
		}
		go rl.serve(c)
	}
}

type relay struct {
	mu   sync.Mutex
	subs []*relaySub
}

type relaySub struct {
	mu sync.Mutex
	c  net.Conn
}

func (rl *relay) serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, 64<<10)
	r, w := 0, 0
	var out []byte
	for {
		n, err := c.Read(buf[w:])
		if err != nil {
			return
		}
		w += n
		out = out[:0]
		var pubs []byte
		for {
			h, body, size, err := packet.Frame(buf[r:w], 0)
			if err != nil {
				if errors.Is(err, packet.ErrIncomplete) {
					break
				}
				return
			}
			switch h.Type {
			case packet.TypeConnect:
				out = (&packet.Connack{}).Append(out)
			case packet.TypeSubscribe:
				s, err := packet.Decode(h, body, packet.Version311)
				if err != nil {
					return
				}
				sub := s.(*packet.Subscribe)
				codes := make([]byte, len(sub.Subscriptions))
				out = (&packet.Suback{PacketID: sub.PacketID, ReturnCodes: codes}).Append(out)
				// Answer before registering, so no PUBLISH overtakes the SUBACK.
				if _, err := c.Write(out); err != nil {
					return
				}
				out = out[:0]
				rl.mu.Lock()
				rl.subs = append(rl.subs, &relaySub{c: c})
				rl.mu.Unlock()
			case packet.TypePublish:
				pubs = append(pubs, buf[r:r+size]...)
			case packet.TypePingreq:
				out = (&packet.Pingresp{}).Append(out)
			case packet.TypeDisconnect:
				return
			}
			r += size
		}
		if len(out) > 0 {
			if _, err := c.Write(out); err != nil {
				return
			}
		}
		if len(pubs) > 0 {
			rl.mu.Lock()
			subs := rl.subs
			rl.mu.Unlock()
			for _, s := range subs {
				s.mu.Lock()
				s.c.Write(pubs) // a subscriber that went away just stops receiving
				s.mu.Unlock()
			}
		}
		if r == w {
			r, w = 0, 0
		} else if r > len(buf)/2 {
			w = copy(buf, buf[r:w])
			r = 0
		}
		if w == len(buf) {
			bigger := make([]byte, 2*len(buf))
			copy(bigger, buf[:w])
			buf = bigger
		}
	}
}
