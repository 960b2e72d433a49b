package pebble

import (
	"context"
	"fmt"
	"log/slog"

	engine "github.com/cockroachdb/pebble/v2"
)

// logger routes the engine's messages to slog. Pebble logs routine events (WAL recovery, table
// creation) with Infof, which is debug-level noise for a broker operator.
type logger struct{ l *slog.Logger }

func (g logger) logf(level slog.Level, format string, args []any) {
	if g.l.Enabled(context.Background(), level) {
		g.l.Log(context.Background(), level, "pebble engine", "detail", fmt.Sprintf(format, args...))
	}
}

// Infof implements engine.Logger at debug level.
func (g logger) Infof(format string, args ...any) { g.logf(slog.LevelDebug, format, args) }

// Errorf implements engine.Logger at error level.
func (g logger) Errorf(format string, args ...any) { g.logf(slog.LevelError, format, args) }

// Fatalf implements engine.Logger. Pebble calls it when it cannot go on (a commit that could not be
// written, a manifest that cannot be updated) and expects it not to return; its default logger
// exits the process. This one logs and panics instead, so that Open, Load and Commit can turn the
// failure into an error (see Backend.guard); in one of the engine's own goroutines the panic still
// ends the process.
func (g logger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	g.l.Error("pebble engine failed", "detail", msg)
	panic(fatalError(msg))
}

// fatalError is the panic value of logger.Fatalf.
type fatalError string

func (e fatalError) Error() string { return string(e) }

// eventListener reports the engine's background failures, which no call returns.
func eventListener(l *slog.Logger) *engine.EventListener {
	return &engine.EventListener{
		BackgroundError: func(err error) {
			l.Error("pebble background error", "error", err)
		},
		DataCorruption: func(info engine.DataCorruptionInfo) {
			l.Error("pebble found corrupt data", "path", info.Path, "error", info.Details)
		},
	}
}
