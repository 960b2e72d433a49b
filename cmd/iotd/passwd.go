package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/iotd/iotd/internal/auth"
)

const passwdUsage = `iotd passwd - manage a password file (mosquitto_passwd's format)

Usage:
  iotd passwd [-c] [-I N] FILE USERNAME             add USERNAME or change its password
  iotd passwd -b [-c] [-I N] FILE USERNAME PASSWORD  the same, with the password on the command line
  iotd passwd -D FILE USERNAME                       delete USERNAME

Without -b the password is read twice from the terminal without echo, or once (one line) from
standard input when it is not a terminal, so that scripts can pipe it in. Other lines and comments
are kept. The file is replaced atomically and left readable by its owner only (mode 0600).
Hashes are PBKDF2-HMAC-SHA512 ($7$), which Mosquitto reads too; a higher -I makes a stolen file
harder to crack and every uncached login slower by the same factor (logins are cached).
The exit status is 0 on success, 1 on error and 2 for bad usage.

Flags:
`

// runPasswd implements `iotd passwd`; args excludes the subcommand's name.
func runPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("iotd passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	create := fs.Bool("c", false, "create FILE, replacing any existing file")
	del := fs.Bool("D", false, "delete USERNAME")
	batch := fs.Bool("b", false, "take the password from the command line (it shows in the process list and shell history)")
	iterations := fs.Int("I", auth.DefaultIterations, "PBKDF2 iteration `count`")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), passwdUsage)
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
	usageErr := func(msg string) int {
		fmt.Fprintf(stderr, "iotd passwd: %s (see iotd passwd --help)\n", msg)
		return 2
	}
	wantArgs := 2
	if *batch {
		wantArgs = 3
	}
	switch {
	case *create && *del:
		return usageErr("-c and -D cannot be used together")
	case *batch && *del:
		return usageErr("-b and -D cannot be used together")
	case *iterations < 1 || *iterations > auth.MaxIterations:
		return usageErr(fmt.Sprintf("-I %d: want 1 to %d", *iterations, auth.MaxIterations))
	case fs.NArg() != wantArgs:
		if *batch {
			return usageErr("want FILE USERNAME PASSWORD")
		}
		return usageErr("want FILE USERNAME")
	}
	if err := passwd(fs.Args(), *create, *del, *iterations, stdin, stderr); err != nil {
		fmt.Fprintf(stderr, "iotd passwd: %v\n", err)
		return 1
	}
	return 0
}

// passwd does the work of runPasswd once the flags are known to be consistent.
func passwd(args []string, create, del bool, iterations int, stdin io.Reader, stderr io.Writer) error {
	file, user := args[0], args[1]
	if err := auth.ValidateUsername(user); err != nil {
		return err
	}
	// Resolve a symbolic link so that the rename below replaces the file it points to, not the link.
	if p, err := filepath.EvalSymlinks(file); err == nil {
		file = p
	}
	var old []byte
	if !create {
		var err error
		if old, err = os.ReadFile(file); err != nil {
			return err
		}
	}
	var line string
	if !del {
		var password []byte
		if len(args) == 3 {
			password = []byte(args[2])
		} else {
			var err error
			if password, err = readPassword(stdin, stderr); err != nil {
				return err
			}
		}
		if len(password) == 0 {
			return errors.New("empty password")
		}
		hash, err := auth.HashPassword(password, iterations)
		if err != nil {
			return err
		}
		line = user + ":" + hash
	}
	updated, found := editPasswords(old, user, line)
	if del && !found {
		return fmt.Errorf("user %q not found in %s", user, file)
	}
	// Refuse to write a file the broker would not load; deleting a bad line is still possible.
	if err := auth.ValidatePasswordFile(file, updated); err != nil {
		return fmt.Errorf("not written, the result would not load: %w", err)
	}
	return writeFileAtomic(file, updated)
}

// editPasswords returns data with user's line replaced by line (removed when line is empty), or
// line appended when user has none, and whether user had a line. Comments, blank lines and other
// users' lines are kept byte for byte, line endings included.
func editPasswords(data []byte, user, line string) ([]byte, bool) {
	var out bytes.Buffer
	found := false
	for len(data) > 0 {
		raw := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			raw, data = data[:i+1], data[i+1:]
		} else {
			data = nil
		}
		text := strings.TrimSpace(string(raw))
		name, _, ok := strings.Cut(text, ":")
		if text == "" || text[0] == '#' || !ok || strings.TrimSpace(name) != user {
			out.Write(raw)
			continue
		}
		if !found && line != "" {
			eol := "\n"
			if bytes.HasSuffix(raw, []byte("\r\n")) {
				eol = "\r\n"
			}
			out.WriteString(line + eol)
		}
		found = true // later lines for the same user are dropped: the loader refuses duplicates
	}
	if !found && line != "" {
		if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
			out.WriteByte('\n')
		}
		out.WriteString(line + "\n")
	}
	return out.Bytes(), found
}

// readPassword asks for the password twice without echo when stdin is a terminal; otherwise it
// reads one line, so that `echo secret | iotd passwd FILE USER` works.
func readPassword(stdin io.Reader, stderr io.Writer) ([]byte, error) {
	if f, ok := stdin.(*os.File); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			return readPasswordTerminal(f, stderr)
		}
	}
	s, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && (err != io.EOF || s == "") {
		if err == io.EOF {
			return nil, errors.New("no password on standard input")
		}
		return nil, fmt.Errorf("read password: %w", err)
	}
	return []byte(strings.TrimSuffix(strings.TrimSuffix(s, "\n"), "\r")), nil
}

// readPasswordTerminal turns echo off on the terminal tty with termios through x/sys (the broker
// is Linux-only, and one ioctl pair does not justify golang.org/x/term), prompts twice on stderr and
// restores the terminal. Echo goes off before the first prompt so that nothing typed early shows.
func readPasswordTerminal(tty *os.File, stderr io.Writer) ([]byte, error) {
	fd := int(tty.Fd())
	saved, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("terminal: %w", err)
	}
	quiet := *saved
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	quiet.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, fmt.Errorf("terminal: %w", err)
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, saved) // best effort: nothing more to do if it fails
	var lines [2][]byte
	for i, prompt := range []string{"Password: ", "Reenter password: "} {
		fmt.Fprint(stderr, prompt)
		lines[i], err = readLine(tty)
		fmt.Fprintln(stderr)
		if err != nil {
			return nil, fmt.Errorf("read password: %w", err)
		}
	}
	if !bytes.Equal(lines[0], lines[1]) {
		return nil, errors.New("passwords do not match")
	}
	return lines[0], nil
}

// readLine reads up to a newline one byte at a time, so that nothing after the line is consumed
// (the second prompt's answer stays in the terminal's queue).
func readLine(r io.Reader) ([]byte, error) {
	var line []byte
	var b [1]byte
	for {
		n, err := r.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				return bytes.TrimSuffix(line, []byte("\r")), nil
			}
			line = append(line, b[0])
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				return line, nil
			}
			return nil, err
		}
	}
}

// writeFileAtomic replaces path with data, mode 0600: it writes a temporary file in the same
// directory, syncs it, renames it over path and syncs the directory, so that a crash leaves
// either the old file or the new one, never a partial file the broker would refuse.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name()) // best effort: the error that brought us here matters more
		}
	}()
	if err = tmp.Chmod(0o600); err != nil {
		return err
	}
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
