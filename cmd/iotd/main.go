// Command iotd runs the IoTD MQTT broker.
//
//	iotd                      serve with built-in defaults (TCP on 0.0.0.0:1883)
//	iotd -c iotd.toml         serve with a TOML configuration file
//	iotd --listen HOST:PORT   replace the configured TCP listeners (repeatable)
//	iotd --data-dir DIR       keep the store in DIR (default ./iotd-data)
//	iotd --store BACKEND      file (Pebble, the default), sqlite, or memory (keeps nothing)
//	iotd --store-move-aside   start even if the store cannot be read, moving it aside
//	iotd passwd ...           manage a password file (Mosquitto's format)
//	iotd bench ...            the load generator
//	iotd --version            print the version
//
// SIGINT shuts down gracefully (stop accepting, close clients, wait, bounded by
// server.shutdown_timeout); SIGTERM exits at once; SIGHUP reloads users, ACLs and certificates.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only with --pprof
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/iotd/iotd/internal/broker"
	"github.com/iotd/iotd/internal/config"
	"github.com/iotd/iotd/internal/server"
)

// version is set at build time with -ldflags "-X main.version=..."; "dev" otherwise.
var version = "dev"

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

type listenFlag []string

func (l *listenFlag) String() string     { return strings.Join(*l, ",") }
func (l *listenFlag) Set(v string) error { *l = append(*l, v); return nil }

const usage = `iotd - the IoTD MQTT broker

Usage:
  iotd [-c FILE] [--listen HOST:PORT]... [--data-dir DIR] [--store file|sqlite|memory]
  iotd bench SUBCOMMAND [flags]   load generator (iotd bench --help)
  iotd passwd [-c] [-D] [-b] [-I ITERATIONS] FILE USER [PASSWORD]
                                  add, change or delete a user in a password file
                                  (Mosquitto's mosquitto_passwd format)
  iotd --version
  iotd --help

With no configuration file iotd listens on 0.0.0.0:1883 with built-in defaults
(see docs/configuration.md) and keeps sessions and retained messages in
./iotd-data. SIGINT shuts down gracefully; SIGTERM exits at once (nothing
acknowledged is lost with store.fsync = "always").

Flags:
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "bench" {
		return runBench(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "passwd" {
		return runPasswd(args[1:], os.Stdin, stdout, stderr)
	}
	fs := flag.NewFlagSet("iotd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("c", "", "TOML configuration `FILE`")
	var listens listenFlag
	fs.Var(&listens, "listen", "TCP listener `HOST:PORT`; repeatable; replaces the configured listeners")
	showVersion := fs.Bool("version", false, "print the version and exit")
	pprofAddr := fs.String("pprof", "", "serve net/http/pprof on `HOST:PORT` (for profiling; off by default)")
	dataDir := fs.String("data-dir", "", "data `DIR` of the store (overrides store.dir)")
	backend := fs.String("store", "", "store `BACKEND`: file, sqlite or memory (overrides store.backend)")
	moveAside := fs.Bool("store-move-aside", false, "if the store cannot be read, move it aside and start empty (as store.on_corrupt = \"move-aside\")")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "iotd: unexpected argument %q (see iotd --help)\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintf(stdout, "iotd %s\n", version)
		return 0
	}

	cfg := config.Default()
	if *cfgPath != "" {
		var err error
		if cfg, err = config.Load(*cfgPath); err != nil {
			fmt.Fprintf(stderr, "iotd: configuration: %v\n", err)
			return 1
		}
	}
	if len(listens) > 0 {
		cfg.Listeners = nil
		for i, a := range listens {
			cfg.Listeners = append(cfg.Listeners, config.Listener{Name: fmt.Sprintf("listen-%d", i), Type: "tcp", Address: a})
		}
	}
	if *dataDir != "" {
		cfg.Store.Dir = *dataDir
	}
	if *backend != "" {
		cfg.Store.Backend = *backend
	}
	if len(listens) > 0 || *dataDir != "" || *backend != "" {
		if err := cfg.Validate(); err != nil {
			fmt.Fprintf(stderr, "iotd: --listen, --data-dir or --store: %v\n", err)
			return 2
		}
	}
	return serve(cfg, *pprofAddr, *moveAside || cfg.Store.OnCorrupt == "move-aside", stderr)
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(cfg config.Config, pprofAddr string, moveAside bool, stderr io.Writer) int {
	log := newLogger(cfg.Log, stderr)
	if pprofAddr != "" {
		ln, err := net.Listen("tcp", pprofAddr)
		if err != nil {
			log.Error("cannot listen for pprof", "address", pprofAddr, "error", err)
			return 1
		}
		ps := &http.Server{Handler: http.DefaultServeMux, ReadHeaderTimeout: 10 * time.Second}
		go ps.Serve(ln) // lives as long as the process; profiling only
		defer ps.Close()
		log.Info("pprof listening", "address", ln.Addr().String())
	}
	sec, err := newSecurity(cfg, log)
	if err != nil {
		log.Error("cannot load the security configuration", "error", err)
		return 1
	}
	began := time.Now()
	st, rec, err := openStore(cfg.Store, moveAside, log)
	if err != nil {
		log.Error("cannot open the store", "error", err)
		return 1
	}
	if st != nil {
		defer func() {
			// After the server's shutdown: every Disconnect is recorded, then flushed and synced.
			if err := st.Close(); err != nil {
				log.Error("store close failed", "error", err)
			}
		}()
	}
	maxQueued := cfg.Session.MaxQueuedMessages
	if maxQueued == 0 {
		maxQueued = -1 // the file's 0 keeps none; the broker's 0 would mean its default
	}
	b := broker.New(broker.Options{
		MaxRetained:        cfg.Retained.MaxMessages,
		MaxRetainedPayload: cfg.Retained.MaxPayloadSize,
		MaxInflight:        cfg.Session.MaxInflightMessages,
		MaxQueued:          maxQueued,
		MaxQueuedBytes:     cfg.Session.MaxQueuedBytes,
		QueueQoS0:          cfg.Session.QueueQoS0,
		RetryInterval:      cfg.Session.RetryInterval.Std(),
		RetryMaxInterval:   cfg.Session.RetryMaxInterval.Std(),
		SessionExpiry:      cfg.Session.Expiry.Std(),
		Store:              st,
		Authenticator:      sec.authenticator(),
		Authorizer:         sec.authorizer(),
		Logger:             log,
	})
	if st != nil {
		wills := b.Restore(rec)
		log.Info("store opened", "backend", cfg.Store.Backend, "path", storePath(cfg.Store), "fsync", cfg.Store.Fsync,
			"sessions", len(rec.Sessions), "retained", len(rec.Retained), "messages", rec.Messages,
			"wills_published", wills, "orphans_removed", rec.Removed, "took", time.Since(began).Round(time.Millisecond).String())
	} else {
		log.Info("store: memory only; nothing survives a restart")
	}
	housekeepCtx, stopHousekeep := context.WithCancel(context.Background())
	housekept := make(chan struct{})
	go func() {
		defer close(housekept)
		b.Run(housekeepCtx)
	}()
	watched := sec.watch(housekeepCtx)
	defer func() {
		stopHousekeep()
		<-housekept
		watched()
	}()
	var dur server.Durability
	if st != nil {
		dur = st
	}
	srv, err := server.New(b, server.Options{
		MaxPacketSize:   cfg.Limits.MaxPacketSize,
		MaxConnections:  cfg.Limits.MaxConnections,
		ConnectTimeout:  cfg.Limits.ConnectTimeout.Std(),
		MaxKeepAlive:    uint16(cfg.KeepAlive.Max),
		MaxPendingBytes: cfg.Limits.MaxPendingBytes,
		Workers:         cfg.Server.Workers,
		Durability:      dur,
		Limiter:         sec.limiter,
		Logger:          log,
	})
	if err != nil {
		log.Error("cannot start server", "error", err)
		return 1
	}
	var listeners []net.Listener
	for _, lc := range cfg.Listeners {
		if lc.Type == "tls" && lc.IdentityFrom != "" {
			srv.SetIdentity(lc.Name, sec.tls[lc.Name].Identity)
		}
		ln, err := sec.listen(lc)
		if err != nil {
			log.Error("cannot listen", "listener", lc.Name, "address", lc.Address, "error", err)
			for _, l := range listeners {
				l.Close()
			}
			srv.Shutdown(context.Background())
			return 1
		}
		listeners = append(listeners, ln)
		log.Info("listening", "listener", lc.Name, "type", lc.Type, "address", ln.Addr().String())
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	defer signal.Stop(hups)

	var wg sync.WaitGroup
	serveErr := make(chan error, len(listeners))
	for i, ln := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln, cfg.Listeners[i].Name); err != nil && !errors.Is(err, server.ErrServerClosed) {
				serveErr <- err
			}
		}()
	}
	log.Info("iotd started", "version", version, "pid", os.Getpid())

	code := 0
	for running := true; running; {
		select {
		case <-hups:
			// SIGHUP reloads users, ACLs and certificates without a restart.
			sec.reload(b)
		case sig := <-sigs:
			if sig == syscall.SIGTERM {
				// SIGTERM exits at once; state that must survive it is the store's job (crash-safe).
				log.Info("SIGTERM received: exiting immediately")
				os.Exit(0)
			}
			log.Info("SIGINT received: shutting down", "timeout", cfg.Server.ShutdownTimeout.Std().String())
			running = false
		case err := <-serveErr:
			log.Error("listener failed; shutting down", "error", err)
			code = 1
			running = false
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout.Std())
	defer cancel()
	go func() {
		// A second SIGINT or a SIGTERM during shutdown exits at once.
		select {
		case <-sigs:
			log.Warn("second signal: exiting immediately")
			os.Exit(1)
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil {
		log.Error("shutdown incomplete", "error", err)
		code = 1
	}
	wg.Wait()
	log.Info("iotd stopped", "sessions", b.Stats().Sessions)
	return code
}
