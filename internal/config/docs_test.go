package config

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

const (
	examplePath = "../../iotd.example.toml"
	docsPath    = "../../docs/configuration.md"
)

// schemaKeys returns the dotted path of every leaf key of Config, from its
// toml struct tags, with no index for list elements: "listener.address",
// "limits.max_packet_size", ...
func schemaKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		path := prefix + tag
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct {
			keys = append(keys, schemaKeys(ft, path+".")...)
			continue
		}
		keys = append(keys, path)
	}
	return keys
}

// optionalKeys returns the keys of schemaKeys whose field is a pointer: keys
// whose default is "not set", which TOML cannot write.
func optionalKeys(t reflect.Type, prefix string) map[string]bool {
	keys := make(map[string]bool)
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		switch ft.Kind() {
		case reflect.Struct:
			for k := range optionalKeys(ft, prefix+tag+".") {
				keys[k] = true
			}
		case reflect.Pointer:
			keys[prefix+tag] = true
		}
	}
	return keys
}

// section returns the text of the example file's section for the table
// path ("auth", or "listener" for the [[listener]] tables): from its header
// to the next header.
func section(file, path string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(file, "\n") {
		if strings.HasPrefix(line, "[") {
			in = line == "["+path+"]" || line == "[["+path+"]]"
		}
		if in {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func TestSchemaKeys(t *testing.T) {
	// A guard on the walkers themselves: if they found nothing, the tests
	// below would pass vacuously.
	keys := schemaKeys(reflect.TypeFor[Config](), "")
	for _, want := range []string{"listener.address", "limits.max_packet_size", "server.workers", "listener.allow_anonymous"} {
		if !contains(keys, want) {
			t.Fatalf("schemaKeys() = %q, missing %q", keys, want)
		}
	}
	opt := optionalKeys(reflect.TypeFor[Config](), "")
	if want := map[string]bool{"listener.allow_anonymous": true, "auth.allow_anonymous": true}; !reflect.DeepEqual(opt, want) {
		t.Fatalf("optionalKeys() = %v, want %v", opt, want)
	}
}

func TestSection(t *testing.T) {
	file := "a = 1\n[[listener]]\nx = 1\n[auth]\ny = 2\n# z = 3\n[log]\nw = 4\n"
	tests := []struct{ path, want string }{
		{"listener", "[[listener]]\nx = 1\n"},
		{"auth", "[auth]\ny = 2\n# z = 3\n"},
		{"missing", ""},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := section(file, tt.path); got != tt.want {
				t.Fatalf("section(%q) = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}

func contains(s []string, v string) bool {
	for _, e := range s {
		if e == v {
			return true
		}
	}
	return false
}

func TestExampleFile(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("equals Default", func(t *testing.T) {
		got, err := Parse(data)
		if err != nil {
			t.Fatalf("Parse(%s) error = %v", examplePath, err)
		}
		if want := Default(); !reflect.DeepEqual(got, want) {
			t.Fatalf("Parse(%s) =\n %+v\nwant Default()\n %+v", examplePath, got, want)
		}
	})

	// Equality alone would pass with keys left out (they get defaults), so
	// also check that the example spells out every key. An optional key's
	// default is "not set", so the example shows it commented out, in its
	// own section, and leaves it unset.
	t.Run("sets every key", func(t *testing.T) {
		var m map[string]any
		md, err := toml.Decode(string(data), &m)
		if err != nil {
			t.Fatal(err)
		}
		defined := make(map[string]bool)
		for _, k := range md.Keys() {
			defined[k.String()] = true
		}
		optional := optionalKeys(reflect.TypeFor[Config](), "")
		for _, key := range schemaKeys(reflect.TypeFor[Config](), "") {
			t.Run(key, func(t *testing.T) {
				if !optional[key] {
					if !defined[key] {
						t.Fatalf("%s does not set %s", examplePath, key)
					}
					return
				}
				if defined[key] {
					t.Fatalf("%s sets the optional key %s; its default is to leave it unset", examplePath, key)
				}
				table, leaf, _ := strings.Cut(key, ".")
				if !strings.Contains(section(string(data), table), "\n# "+leaf+" = ") {
					t.Fatalf("%s does not show the optional key %s as a comment (\"# %s = ...\") in its section", examplePath, key, leaf)
				}
			})
		}
	})
}

func TestDocsListEveryKey(t *testing.T) {
	data, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, key := range schemaKeys(reflect.TypeFor[Config](), "") {
		t.Run(key, func(t *testing.T) {
			// Each key has a row of the reference table, key first.
			if !strings.Contains(doc, "| `"+key+"` |") {
				t.Fatalf("%s has no reference row for `%s`", docsPath, key)
			}
		})
	}
}

// TestDocsErrorExample runs the error example of docs/configuration.md, so
// that the messages shown there are the ones IoTD prints.
func TestDocsErrorExample(t *testing.T) {
	data, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	const fileMarker = "For this `iotd.toml`:\n\n```toml\n"
	start := strings.Index(doc, fileMarker)
	if start < 0 {
		t.Fatalf("%s: no example introduced by %q", docsPath, fileMarker)
	}
	rest := doc[start+len(fileMarker):]
	end := strings.Index(rest, "```")
	if end < 0 {
		t.Fatalf("%s: example file is not closed", docsPath)
	}
	file := rest[:end]
	var want []string
	for _, line := range strings.Split(rest[end:], "\n") {
		if l, ok := strings.CutPrefix(line, "    iotd.toml: "); ok {
			want = append(want, "iotd.toml: "+l)
		}
	}
	if len(want) == 0 {
		t.Fatalf("%s: no expected output after the example", docsPath)
	}

	t.Chdir(t.TempDir())
	if err := os.WriteFile("iotd.toml", []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load("iotd.toml")
	if err == nil {
		t.Fatal("Load(example) error = nil")
	}
	if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Fatalf("Load(example) error\n got %q\nwant %q (from %s)", got, want, docsPath)
	}

	if err := os.Remove("iotd.toml"); err != nil {
		t.Fatal(err)
	}
	const missing = "read config: open iotd.toml: no such file or directory"
	if !strings.Contains(strings.ReplaceAll(doc, "\n", " "), "`"+missing+"`") {
		t.Fatalf("%s does not show the missing-file error %q", docsPath, missing)
	}
	if _, err := Load("iotd.toml"); err == nil || err.Error() != missing {
		t.Fatalf("Load(missing) error = %v, want %q", err, missing)
	}
}
