package tlsconf

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce is how long Watch waits after the last file event before it reloads, so that a
// certificate and key replaced one after the other are read together, once.
const debounce = 100 * time.Millisecond

// Watch reloads the material whenever one of the files changes, until ctx ends; it then returns
// nil. It returns an error only when the watch cannot be set up. Reload results are logged:
// a failed reload keeps the previous material and is logged as an error.
//
// Watch observes the files' directories rather than the files: editors, certbot and
// cert-manager replace a file by renaming a new one over it, which a watch on the old file
// would not see. Kubernetes secret volumes swap a "..data" symlink in the directory; a change
// to any name starting with ".." there also counts. Watch reloads once when its watches are in
// place, so a change made between New and Watch is not missed.
func (c *Config) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("tlsconf: watch: %w", err)
	}
	defer w.Close()

	files := map[string]bool{}
	var dirs []string
	for _, f := range []string{c.opts.CertFile, c.opts.KeyFile, c.opts.CAFile} {
		if f == "" {
			continue
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			return fmt.Errorf("tlsconf: watch %q: %w", f, err)
		}
		files[abs] = true
		if dir := filepath.Dir(abs); !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	for _, dir := range dirs {
		if err := w.Add(dir); err != nil {
			return fmt.Errorf("tlsconf: watch directory %q: %w", dir, err)
		}
	}
	c.reloadAndLog()

	timer := time.NewTimer(debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("tlsconf: file watcher stopped")
			}
			if relevant(ev, files) {
				timer.Reset(debounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("tlsconf: file watcher stopped")
			}
			// An overflow means events were lost; reload to be sure nothing was missed.
			c.log.Warn("tls file watcher error", "err", err)
			timer.Reset(debounce)
		case <-timer.C:
			c.reloadAndLog()
		}
	}
}

// relevant reports whether ev may have changed one of files: any change but a mode change to
// one of them, or to a Kubernetes "..data"-style name in their directories.
func relevant(ev fsnotify.Event, files map[string]bool) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	return files[filepath.Clean(ev.Name)] || strings.HasPrefix(filepath.Base(ev.Name), "..")
}

// reloadAndLog reloads and logs a failure; a success is logged by reload itself.
func (c *Config) reloadAndLog() {
	changed, err := c.reload()
	switch {
	case err != nil:
		c.log.Error("tls reload failed; keeping the previous certificate", "cert_file", c.opts.CertFile, "err", err)
	case !changed:
		c.log.Debug("tls files unchanged", "cert_file", c.opts.CertFile)
	}
}
