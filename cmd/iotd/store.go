package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/iotd/iotd/internal/config"
	"github.com/iotd/iotd/internal/store"
	"github.com/iotd/iotd/internal/store/pebble"
	"github.com/iotd/iotd/internal/store/sqlite"
)

// storePath is where a backend keeps its files inside the data directory: one directory per
// backend, so that moving a store aside moves all of it.
func storePath(c config.Store) string {
	if c.Backend == "sqlite" {
		return filepath.Join(c.Dir, "sqlite")
	}
	return filepath.Join(c.Dir, "pebble")
}

// openStore opens the configured store and what it recovered; (nil, nil, nil) for the memory
// backend. An unreadable store stops the start with an error that says which file and why, unless
// moveAside (store.on_corrupt = "move-aside" or --store-move-aside) asks to rename it and begin
// empty.
func openStore(c config.Store, moveAside bool, log *slog.Logger) (*store.Log, *store.Recovered, error) {
	if c.Backend == "memory" {
		return nil, nil, nil
	}
	pol, err := store.ParsePolicy(c.Fsync)
	if err != nil {
		return nil, nil, err // validated by config
	}
	path := storePath(c)
	opts := store.Options{Fsync: pol, Interval: c.FsyncInterval.Std(), Logger: log}
	l, rec, err := openStoreAt(c.Backend, path, opts, log)
	if err != nil && errors.Is(err, store.ErrCorrupt) && moveAside {
		to, merr := store.MoveAside(path, time.Now())
		if merr != nil {
			return nil, nil, errors.Join(err, merr)
		}
		log.Error("store cannot be read: moved aside, starting with an empty store", "path", path, "moved_to", to, "error", err)
		l, rec, err = openStoreAt(c.Backend, path, opts, log)
	}
	return l, rec, err
}

func openStoreAt(backend, path string, opts store.Options, log *slog.Logger) (*store.Log, *store.Recovered, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, fmt.Errorf("store: data directory: %w", err)
	}
	var be store.Backend
	var err error
	switch backend {
	case "sqlite":
		be, err = sqlite.Open(path, sqlite.Options{Logger: log})
	default:
		be, err = pebble.Open(path, pebble.Options{Logger: log})
	}
	if err != nil {
		return nil, nil, err
	}
	l, rec, err := store.Open(be, path, opts)
	if err != nil {
		be.Close()
		return nil, nil, err
	}
	return l, rec, nil
}
