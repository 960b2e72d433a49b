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

func TestSchemaKeys(t *testing.T) {
	// A guard on the walker itself: if it found nothing, the tests below
	// would pass vacuously.
	keys := schemaKeys(reflect.TypeFor[Config](), "")
	for _, want := range []string{"listener.address", "limits.max_packet_size", "server.workers"} {
		if !contains(keys, want) {
			t.Fatalf("schemaKeys() = %q, missing %q", keys, want)
		}
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
	// also check that the example spells out every key.
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
		for _, key := range schemaKeys(reflect.TypeFor[Config](), "") {
			t.Run(key, func(t *testing.T) {
				if !defined[key] {
					t.Fatalf("%s does not set %s", examplePath, key)
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
