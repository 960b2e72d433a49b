package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/iotd/iotd/internal/bench"
	"github.com/iotd/iotd/internal/packet"
)

const benchUsage = `iotd bench - MQTT load generator (publishers, subscribers, idle connections)

Usage:
  iotd bench conn     [flags]   open -c connections at --interval and hold them for --duration
  iotd bench pub      [flags]   -c publishers at --rate (0 = as fast as the broker takes)
  iotd bench sub      [flags]   -c subscribers on --filter, until --count messages or --duration
  iotd bench scenario [flags]   --subs subscribers and --pubs publishers together, end to end

Each subcommand takes --help. A progress line goes to standard error every second; the summary
(throughput, latency percentiles, errors, losses, the generator's own CPU) to standard output,
as JSON with --json. The exit status is 1 when the run had errors or lost a QoS 1/2 message,
2 for bad flags.
`

// benchFlags holds the values of every bench flag; each subcommand registers the ones it uses.
type benchFlags struct {
	host, addr        string
	port              int
	keepAlive         time.Duration
	prefix            string
	username, passwd  string
	persistent        bool
	cafile, cert, key string
	interval          time.Duration
	workers           int
	timeout           time.Duration
	asJSON, quiet     bool

	count          int
	pubs, subs     int
	rate, total    float64
	qos, subQoS    int
	size           int
	topic, filter  string
	retain         bool
	messages       int
	duration       time.Duration
	drain          time.Duration
	maxDrain       time.Duration
	inflight       int
	extra          int
	extraFilter    string
	extraPerConn   int
	spreadAbove    int
	progressPeriod time.Duration
}

func (f *benchFlags) common(fs *flag.FlagSet, keepAlive time.Duration) {
	fs.StringVar(&f.host, "h", "127.0.0.1", "broker `host`")
	fs.IntVar(&f.port, "p", 1883, "broker `port`")
	fs.StringVar(&f.addr, "addr", "", "broker `host:port` (overrides -h and -p)")
	fs.DurationVar(&f.keepAlive, "keepalive", keepAlive, "keep-alive sent in CONNECT")
	fs.StringVar(&f.prefix, "prefix", "", "client id `prefix` (default: ib- and a tag unique to the run)")
	fs.StringVar(&f.username, "username", "", "user `name` sent in CONNECT")
	fs.StringVar(&f.passwd, "password", "", "`password` sent in CONNECT (with --username)")
	fs.StringVar(&f.cafile, "cafile", "", "connect over TLS, trusting the CA certificates in `FILE` (PEM)")
	fs.StringVar(&f.cert, "cert", "", "client certificate `FILE` (PEM) for TLS, with --key")
	fs.StringVar(&f.key, "key", "", "private key `FILE` (PEM) of --cert")
	fs.BoolVar(&f.persistent, "persistent", false, "connect with CleanSession=0 (sessions kept, and stored by a broker with a store)")
	fs.DurationVar(&f.interval, "interval", 0, "time between connection attempts (0 = as fast as --workers allow)")
	fs.IntVar(&f.workers, "workers", bench.DefaultWorkers, "connection attempts in progress at once")
	fs.DurationVar(&f.timeout, "timeout", bench.DefaultTimeout, "bound on each connection attempt and on a stalled write")
	fs.IntVar(&f.spreadAbove, "spread-above", bench.DefaultSpreadAbove, "spread source addresses over 127.0.0.2-251 above this many connections (-1 never)")
	fs.BoolVar(&f.asJSON, "json", false, "print the summary as JSON")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress lines")
	fs.DurationVar(&f.progressPeriod, "progress", time.Second, "time between progress lines")
}

func (f *benchFlags) publishing(fs *flag.FlagSet) {
	fs.Float64Var(&f.rate, "rate", 0, "messages per second per publisher (0 = as fast as the broker takes)")
	fs.Float64Var(&f.total, "total-rate", 0, "messages per second for all publishers together (overrides --rate)")
	fs.IntVar(&f.size, "size", bench.DefaultSize, "payload `bytes` (at least 26 for latency and loss accounting)")
	fs.StringVar(&f.topic, "topic", bench.DefaultTopic, "topic `template`; %i is the publisher index")
	fs.BoolVar(&f.retain, "retain", false, "publish with RETAIN")
	fs.IntVar(&f.inflight, "inflight", bench.DefaultInflight, "unacknowledged QoS 1/2 messages per publisher")
	fs.DurationVar(&f.drain, "drain", bench.DefaultDrain, "after publishing, stop waiting for acknowledgements and deliveries after this long without one")
	fs.DurationVar(&f.maxDrain, "max-drain", bench.DefaultMaxDrain, "after publishing, stop waiting for the broker to take and deliver the messages after this long")
}

func (f *benchFlags) target(stderr io.Writer) (bench.Target, error) {
	addr := f.addr
	if addr == "" {
		addr = net.JoinHostPort(f.host, strconv.Itoa(f.port))
	}
	t := bench.Target{
		Addr:             addr,
		KeepAlive:        f.keepAlive,
		ClientPrefix:     f.prefix,
		Username:         f.username,
		Password:         f.passwd,
		Persistent:       f.persistent,
		Interval:         f.interval,
		Workers:          f.workers,
		SpreadAbove:      f.spreadAbove,
		Timeout:          f.timeout,
		ProgressInterval: f.progressPeriod,
	}
	if !f.quiet {
		t.Progress = stderr
	}
	if f.cafile != "" {
		pem, err := os.ReadFile(f.cafile)
		if err != nil {
			return t, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return t, fmt.Errorf("--cafile %s: no PEM certificate", f.cafile)
		}
		// Classic key exchanges only: Go would offer the post-quantum X25519MLKEM768 first, which a
		// broker on OpenSSL 3.0 does not take, so brokers would not be compared on equal work.
		t.TLS = &tls.Config{RootCAs: pool, ServerName: f.host, MinVersion: tls.VersionTLS12,
			CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256}}
		if f.cert != "" {
			c, err := tls.LoadX509KeyPair(f.cert, f.key)
			if err != nil {
				return t, err
			}
			t.TLS.Certificates = []tls.Certificate{c}
		}
	}
	return t, nil
}

func (f *benchFlags) publishers(count int) bench.Publishers {
	rate := f.rate
	if f.total > 0 && count > 0 {
		rate = f.total / float64(count)
	}
	return bench.Publishers{
		Count: count, Rate: rate, QoS: packet.QoS(f.qos), Size: f.size, Topic: f.topic,
		Retain: f.retain, Messages: f.messages, Inflight: f.inflight,
	}
}

// runBench runs `iotd bench SUBCOMMAND [flags]` and returns the exit status.
func runBench(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, benchUsage)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, benchUsage)
		return 0
	}
	var f benchFlags
	fs := flag.NewFlagSet("iotd bench "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	keepAlive := bench.DefaultKeepAlive
	if args[0] == "conn" {
		keepAlive = 300 * time.Second // idle connections should stay quiet while they are measured
	}
	f.common(fs, keepAlive)
	var about string
	switch args[0] {
	case "conn":
		about = "Opens -c connections (CONNECT, clean session) at --interval, holds them idle for --duration, closes them."
		fs.IntVar(&f.count, "c", 1, "connections")
		fs.DurationVar(&f.duration, "duration", bench.DefaultDuration, "how long to hold the connections once open")
	case "pub":
		about = "Runs -c publishers until --count messages each or --duration."
		fs.IntVar(&f.count, "c", 1, "publishers")
		fs.IntVar(&f.qos, "qos", 0, "QoS of the PUBLISH packets")
		fs.IntVar(&f.messages, "count", 0, "messages per publisher (0 = until --duration)")
		fs.DurationVar(&f.duration, "duration", 0, "publishing time (default 10s when --count is 0)")
		f.publishing(fs)
	case "sub":
		about = "Runs -c subscribers until they received --count messages together or --duration."
		fs.IntVar(&f.count, "c", 1, "subscribers")
		fs.IntVar(&f.qos, "qos", 0, "QoS requested in SUBSCRIBE")
		fs.StringVar(&f.filter, "filter", bench.DefaultFilter, "topic filter `template`; %i is the subscriber index")
		fs.IntVar(&f.messages, "count", 0, "messages to receive in total (0 = until --duration)")
		fs.DurationVar(&f.duration, "duration", 0, "run time (default 10s when --count is 0)")
	case "scenario":
		about = "Connects --subs subscribers (and --extra-subs non-matching subscriptions), then runs --pubs\n" +
			"publishers until --count messages each or --duration, then waits for the deliveries.\n" +
			"Measures end-to-end latency from a timestamp in the payload, and losses and duplicates."
		fs.IntVar(&f.pubs, "pubs", 1, "publishers")
		fs.IntVar(&f.subs, "subs", 1, "subscribers")
		fs.IntVar(&f.qos, "qos", 0, "QoS of the publishers and (unless --sub-qos) of the subscriptions")
		fs.IntVar(&f.subQoS, "sub-qos", -1, "QoS requested in SUBSCRIBE; -1 takes --qos")
		fs.StringVar(&f.filter, "filter", bench.DefaultFilter, "topic filter `template`; %i is the subscriber index")
		fs.IntVar(&f.messages, "count", 0, "messages per publisher (0 = until --duration)")
		fs.DurationVar(&f.duration, "duration", 0, "publishing time (default 10s when --count is 0)")
		fs.IntVar(&f.extra, "extra-subs", 0, "extra wildcard subscriptions to install first (matching cost)")
		fs.StringVar(&f.extraFilter, "extra-filter", bench.DefaultExtraFilter, "extra filter `template`; %i is the subscription index")
		fs.IntVar(&f.extraPerConn, "extra-per-conn", bench.DefaultExtraPerConn, "extra subscriptions per connection")
		f.publishing(fs)
	default:
		fmt.Fprintf(stderr, "iotd bench: unknown subcommand %q\n\n%s", args[0], benchUsage)
		return 2
	}
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: iotd bench %s [flags]\n\n%s\n\nFlags:\n", args[0], about)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "iotd bench %s: unexpected argument %q\n", args[0], fs.Arg(0))
		return 2
	}
	if f.qos < 0 || f.qos > 2 || f.subQoS > 2 {
		fmt.Fprintf(stderr, "iotd bench %s: qos must be 0, 1 or 2\n", args[0])
		return 2
	}
	if _, err := bench.RaiseFileLimit(); err != nil {
		fmt.Fprintf(stderr, "iotd bench: cannot raise the open file limit: %v\n", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	t, err := f.target(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "iotd bench %s: TLS: %v\n", args[0], err)
		return 2
	}
	var sum *bench.Summary
	switch args[0] {
	case "conn":
		sum, err = bench.RunConn(ctx, bench.ConnOptions{Target: t, Count: f.count, Hold: f.duration})
	case "pub":
		sum, err = bench.RunPub(ctx, bench.PubOptions{Target: t, Publishers: f.publishers(f.count), Duration: f.duration, Drain: f.drain, MaxDrain: f.maxDrain})
	case "sub":
		sum, err = bench.RunSub(ctx, bench.SubOptions{Target: t, Duration: f.duration, Subscribers: bench.Subscribers{
			Count: f.count, Filter: f.filter, QoS: packet.QoS(f.qos), Messages: f.messages,
		}})
	case "scenario":
		subQoS := f.subQoS
		if subQoS < 0 {
			subQoS = f.qos
		}
		sum, err = bench.RunScenario(ctx, bench.ScenarioOptions{
			Target:       t,
			Pub:          f.publishers(f.pubs),
			Sub:          bench.Subscribers{Count: f.subs, Filter: f.filter, QoS: packet.QoS(subQoS)},
			Duration:     f.duration,
			Drain:        f.drain,
			MaxDrain:     f.maxDrain,
			ExtraSubs:    f.extra,
			ExtraFilter:  f.extraFilter,
			ExtraPerConn: f.extraPerConn,
		})
	}
	if err != nil {
		fmt.Fprintf(stderr, "iotd bench %s: %v\n", args[0], err)
		return 2
	}
	if f.asJSON {
		err = sum.WriteJSON(stdout)
	} else {
		err = sum.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "iotd bench: %v\n", err)
		return 1
	}
	if !sum.OK() {
		return 1
	}
	return 0
}
