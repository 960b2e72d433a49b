package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"
)

// Parse returns Default with the TOML document data laid over it, then
// validated. Keys the document omits keep their defaults; a [[listener]]
// table replaces the whole default listener list, and a listener's omitted
// keys get the listener defaults (type "tcp", name "<type>-<index>",
// client_auth "none", min_tls_version "1.2"; allow_anonymous stays unset).
//
// Every problem is reported, not only the first: unknown keys, values of the
// wrong TOML type, bad duration strings and out-of-range values each give a
// *FieldError, and the errors are joined with errors.Join. Only a TOML syntax
// error ends decoding early and is returned alone. On error the returned
// Config is the zero value.
func Parse(data []byte) (Config, error) {
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		return Config{}, syntaxError(data, err)
	}

	c := Default()
	d := newDecoder(&md)
	d.fields(top, "", nil, reflect.ValueOf(&c).Elem())
	if d.seen["listener"] && !d.failed["listener"] {
		for i := range c.Listeners {
			d.listenerDefaults(i, &c.Listeners[i])
		}
	}

	errs := d.errs
	for _, e := range c.validate() {
		// A key whose value could not be decoded still holds its default
		// (or nothing), so a second complaint about it would only mislead.
		var fe *FieldError
		if errors.As(e, &fe) && d.failed[fe.Path] {
			continue
		}
		errs = append(errs, e)
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// Load reads the TOML file at path and parses it as Parse does. Every error
// names the file: a read error wraps the *fs.PathError (so errors.Is(err,
// fs.ErrNotExist) works), and each joined problem of a bad file is prefixed
// with path while still unwrapping to its *FieldError.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return Config{}, nameFile(path, err)
	}
	return c, nil
}

// nameFile prefixes path to each error that err joins, so that every line of
// the message says which file it is about.
func nameFile(path string, err error) error {
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	named := make([]error, len(errs))
	for i, e := range errs {
		named[i] = fmt.Errorf("%s: %w", path, e)
	}
	return errors.Join(named...)
}

// syntaxError rewords a TOML parse error so that it leads with the position.
// The line and column are worked out from the byte offset because the
// library counts a newline that ends a bad line as the start of the next one.
func syntaxError(data []byte, err error) error {
	var pe toml.ParseError
	if !errors.As(err, &pe) {
		return fmt.Errorf("invalid TOML: %w", err)
	}
	line, col := pe.Position.Line, pe.Position.Col
	if off := pe.Position.Start; off >= 0 && off <= len(data) {
		before := data[:off]
		line = 1 + bytes.Count(before, []byte("\n"))
		col = off - bytes.LastIndexByte(before, '\n')
	}
	where := fmt.Sprintf("line %d, column %d", line, col)
	if pe.LastKey != "" {
		where += fmt.Sprintf(" (after key %q)", pe.LastKey)
	}
	return fmt.Errorf("invalid TOML at %s: %s", where, pe.Message)
}

// decoder walks a decoded TOML document alongside the Config struct, using
// the toml struct tags as the schema. It does its own type checks instead of
// letting the TOML library fill the struct because the library stops at the
// first mismatch, and every problem is to be reported in one run.
//
// Values stay toml.Primitive until they are checked: a Primitive remembers
// its key, which is how a problem can be tied back to a line of the file.
type decoder struct {
	md *toml.MetaData
	// count is how many times each key (in toml.Key.String form, so without
	// list indices) is defined in the document. The library keeps one
	// position per such key, so a line is only reported for keys defined
	// once; the keys of a second [[listener]] would otherwise get the line
	// of the last one.
	count  map[string]int
	seen   map[string]bool // paths present in the document
	failed map[string]bool // paths that have a decoding error
	errs   []error
}

func newDecoder(md *toml.MetaData) *decoder {
	d := &decoder{
		md:     md,
		count:  make(map[string]int),
		seen:   make(map[string]bool),
		failed: make(map[string]bool),
	}
	for _, k := range md.Keys() {
		d.count[k.String()]++
	}
	return d
}

// fields decodes the keys of one TOML table into the struct rv. path is the
// table's path as errors show it ("" at the top, "listener[1]"); key is its
// TOML key, without list indices.
func (d *decoder) fields(table map[string]toml.Primitive, path string, key toml.Key, rv reflect.Value) {
	type entry struct {
		name string
		key  toml.Key
		line int
	}
	entries := make([]entry, 0, len(table))
	for name, p := range table {
		k := append(key[:len(key):len(key)], name)
		entries = append(entries, entry{name: name, key: k, line: d.line(p, k)})
	}
	// Report in file order where it is known (the map has none), then the
	// keys whose line is unknown, by name.
	slices.SortFunc(entries, func(a, b entry) int {
		return cmp.Or(
			cmp.Compare(sortLine(a.line), sortLine(b.line)),
			strings.Compare(a.name, b.name))
	})

	for _, e := range entries {
		p := table[e.name]
		epath := e.name
		if path != "" {
			epath = path + "." + e.name
		}
		d.seen[epath] = true
		i, ok := fieldIndex(rv.Type(), e.name)
		if !ok {
			d.fail(epath, e.line, "unknown key")
			continue
		}
		d.value(p, epath, e.key, e.line, rv.Field(i))
	}
}

// sortLine orders unknown lines (0) after every known one.
func sortLine(line int) int {
	if line == 0 {
		return math.MaxInt
	}
	return line
}

var durationType = reflect.TypeFor[Duration]()

// value decodes one TOML value into fv according to fv's type.
func (d *decoder) value(p toml.Primitive, path string, key toml.Key, line int, fv reflect.Value) {
	raw := d.raw(p)
	switch {
	case fv.Type() == durationType:
		s, ok := raw.(string)
		if !ok {
			d.fail(path, line, "must be a duration string such as \"10s\" or \"1m30s\", got %s", describe(raw))
			return
		}
		var v Duration
		if err := v.UnmarshalText([]byte(s)); err != nil {
			d.fail(path, line, "%v", err)
			return
		}
		fv.Set(reflect.ValueOf(v))

	case fv.Kind() == reflect.Int:
		n, ok := raw.(int64)
		if !ok {
			d.fail(path, line, "must be an integer, got %s", describe(raw))
			return
		}
		if fv.OverflowInt(n) {
			d.fail(path, line, "integer %d is out of range", n)
			return
		}
		fv.SetInt(n)

	case fv.Kind() == reflect.Float64:
		// An integer is a number too: "connection_rate = 10" must not need
		// to be written 10.0.
		switch n := raw.(type) {
		case float64:
			fv.SetFloat(n)
		case int64:
			fv.SetFloat(float64(n))
		default:
			d.fail(path, line, "must be a number, got %s", describe(raw))
		}

	case fv.Kind() == reflect.Pointer:
		// An optional key: nil when the file leaves it out, so that code can
		// tell "not set" from the zero value. The pointer is set only when
		// the value decodes.
		elem := reflect.New(fv.Type().Elem())
		d.value(p, path, key, line, elem.Elem())
		if !d.failed[path] {
			fv.Set(elem)
		}

	case fv.Kind() == reflect.Bool:
		b, ok := raw.(bool)
		if !ok {
			d.fail(path, line, "must be a boolean (true or false), got %s", describe(raw))
			return
		}
		fv.SetBool(b)

	case fv.Kind() == reflect.String:
		s, ok := raw.(string)
		if !ok {
			d.fail(path, line, "must be a string, got %s", describe(raw))
			return
		}
		fv.SetString(s)

	case fv.Kind() == reflect.Struct:
		if _, ok := raw.(map[string]any); !ok {
			d.fail(path, line, "must be a table ([%s]), got %s", path, describe(raw))
			return
		}
		d.fields(d.table(p), path, key, fv)

	case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
		if !isArrayOfTables(raw) {
			d.fail(path, line, "must be an array of tables ([[%s]]), got %s", path, describe(raw))
			return
		}
		var elems []toml.Primitive
		// raw is a list of tables, which a []toml.Primitive always accepts.
		if err := d.md.PrimitiveDecode(p, &elems); err != nil {
			panic(fmt.Sprintf("config: decoding list %s: %v", path, err))
		}
		list := reflect.MakeSlice(fv.Type(), len(elems), len(elems))
		for i, e := range elems {
			d.fields(d.table(e), fmt.Sprintf("%s[%d]", path, i), key, list.Index(i))
		}
		fv.Set(list)

	default:
		// Only reachable if a field of a new type is added to Config
		// without teaching the decoder about it; tests decode every key.
		panic(fmt.Sprintf("config: field %s has unsupported type %s", path, fv.Type()))
	}
}

// listenerDefaults fills the keys the file left out of the i-th [[listener]].
// Address has no default there: a listener table without one is an error.
func (d *decoder) listenerDefaults(i int, l *Listener) {
	path := fmt.Sprintf("listener[%d].", i)
	if !d.seen[path+"type"] {
		l.Type = defaultListenerType
	}
	if !d.seen[path+"client_auth"] {
		l.ClientAuth = defaultClientAuth
	}
	if !d.seen[path+"min_tls_version"] {
		l.MinTLSVersion = defaultMinTLSVersion
	}
	if !d.seen[path+"name"] {
		typ := l.Type
		if typ == "" {
			typ = defaultListenerType
		}
		l.Name = defaultListenerName(typ, i)
	}
}

// raw returns the plain Go value the TOML library parsed for p: int64,
// float64, string, bool, a date/time, []any, map[string]any or
// []map[string]any.
func (d *decoder) raw(p toml.Primitive) any {
	var v any
	// Decoding into an empty interface stores the value as is and cannot
	// fail, so the error is always nil.
	_ = d.md.PrimitiveDecode(p, &v)
	return v
}

// table returns the keys of a value already known to be a table, each still
// undecoded and tied to its own key.
func (d *decoder) table(p toml.Primitive) map[string]toml.Primitive {
	var m map[string]toml.Primitive
	if err := d.md.PrimitiveDecode(p, &m); err != nil {
		panic(fmt.Sprintf("config: decoding a table: %v", err))
	}
	return m
}

// errLineProbe is returned by lineProbe so that the TOML library reports the
// position of the key being decoded.
var errLineProbe = errors.New("line probe")

// lineProbe is a toml.Unmarshaler that always fails. The TOML library answers
// an Unmarshaler's error with a toml.ParseError carrying the position of the
// key being decoded, and that is the only public way to learn a key's line.
type lineProbe struct{}

// UnmarshalTOML implements toml.Unmarshaler by always failing.
func (lineProbe) UnmarshalTOML(any) error { return errLineProbe }

// line returns the line that defines key, or 0 when it is not known: the key
// is defined more than once (several [[listener]] tables) or only implied
// (a table named by a dotted key).
func (d *decoder) line(p toml.Primitive, key toml.Key) int {
	if d.count[key.String()] != 1 {
		return 0
	}
	var pe toml.ParseError
	if errors.As(d.md.PrimitiveDecode(p, &lineProbe{}), &pe) {
		return pe.Position.Line
	}
	return 0
}

// fail records a decoding problem at path; line 0 means unknown.
func (d *decoder) fail(path string, line int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if line > 0 {
		msg += fmt.Sprintf(" (line %d)", line)
	}
	d.errs = append(d.errs, &FieldError{Path: path, Msg: msg})
	d.failed[path] = true
}

// fieldIndex finds the field of struct type t whose toml tag is name. The
// match is exact: unlike the TOML library's own decoding, a key that differs
// only in case is unknown, so every spelling in a file is the documented one.
func fieldIndex(t reflect.Type, name string) (int, bool) {
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if tag == name {
			return i, true
		}
	}
	return 0, false
}

// isArrayOfTables reports whether v is a TOML array whose elements are all
// tables: either [[name]] sections or an inline array of inline tables.
func isArrayOfTables(v any) bool {
	switch v := v.(type) {
	case []map[string]any:
		return true
	case []any:
		for _, e := range v {
			if _, ok := e.(map[string]any); !ok {
				return false
			}
		}
		return true
	}
	return false
}

// describe names the TOML type of v, with the value for scalars, for
// messages such as "must be an integer, got string \"1MB\"".
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case int64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return fmt.Sprintf("float %v", v)
	case bool:
		return fmt.Sprintf("boolean %t", v)
	case map[string]any:
		return "table"
	case []map[string]any, []any:
		return "array"
	default:
		return "date/time"
	}
}
