package conformance

import (
	"bufio"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Paths relative to the repository root.
const (
	statementsPath = "docs/spec/mqtt-3.1.1.tsv"
	docPath        = "docs/conformance.md"
)

// TestConformanceDoc checks docs/conformance.md against the statement list and the test sources.
func TestConformanceDoc(t *testing.T) {
	root := repoRoot(t)
	stmts, err := readStatements(filepath.Join(root, statementsPath))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(root, docPath))
	if err != nil {
		t.Fatal(err)
	}
	r := check(root, stmts, string(doc))
	if !r.countsLine {
		r.problems = append(r.problems, docPath+": no line \"Today: N statements covered by tests, N not yet, N n/a\"")
	}
	if len(r.problems) > 0 {
		t.Errorf("%s: %d problems:\n%s", docPath, len(r.problems), strings.Join(r.problems, "\n"))
	}
	t.Logf("%d statements bind a server: %d covered by tests, %d not yet, %d n/a; %d client statements listed, %d of them covered",
		r.server.total(), r.server.covered, r.server.notYet, r.server.na, r.client.total(), r.client.covered)
}

// repoRoot walks up from the working directory to the directory holding go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// statement is one row of the statement list.
type statement struct {
	id, section, appliesTo, summary string
}

// bindsServer reports whether a server must satisfy the statement.
func (s statement) bindsServer() bool { return s.appliesTo == "server" || s.appliesTo == "both" }

var idRE = regexp.MustCompile(`^MQTT-\d+\.\d+\.\d+-\d+$`)

// readStatements reads the TSV statement list: a header line, then id, section, applies_to and
// summary per line.
func readStatements(path string) ([]statement, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []statement
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) != 4 {
			return nil, fmt.Errorf("%s:%d: got %d columns, want 4", path, n, len(cols))
		}
		if n == 1 {
			if strings.Join(cols, ",") != "id,section,applies_to,summary" {
				return nil, fmt.Errorf("%s:1: unexpected header %q", path, sc.Text())
			}
			continue
		}
		s := statement{id: cols[0], section: cols[1], appliesTo: cols[2], summary: cols[3]}
		switch {
		case !idRE.MatchString(s.id):
			return nil, fmt.Errorf("%s:%d: malformed id %q", path, n, s.id)
		case seen[s.id]:
			return nil, fmt.Errorf("%s:%d: id %s listed twice", path, n, s.id)
		case s.appliesTo != "server" && s.appliesTo != "client" && s.appliesTo != "both":
			return nil, fmt.Errorf("%s:%d: applies_to %q", path, n, s.appliesTo)
		}
		seen[s.id] = true
		out = append(out, s)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// tally counts the rows of one kind of statement by status.
type tally struct{ covered, notYet, na int }

func (c tally) total() int { return c.covered + c.notYet + c.na }

// result is what check found.
type result struct {
	server, client tally
	countsLine     bool // the document states the server counts (checked against the rows)
	problems       []string
}

// ref is a test named in a status cell: `dir: TestName/fragment`.
type ref struct {
	dir, test, fragment string
}

var (
	refRE    = regexp.MustCompile("`([^`:]+): (Test[A-Za-z0-9_]*)(/[^`]*)?`")
	refsRE   = regexp.MustCompile("^`[^`]+`(, `[^`]+`)*$")
	notYetRE = regexp.MustCompile(`^not yet: \S`)
	countsRE = regexp.MustCompile(`Today: (\d+) statements covered by tests, (\d+) not yet, (\d+) n/a`)
	naRE     = regexp.MustCompile(`^n/a: \S`)
)

// check compares the document with the statements and with the tests under root.
func check(root string, stmts []statement, doc string) result {
	var r result
	problem := func(line int, format string, args ...any) {
		r.problems = append(r.problems, fmt.Sprintf("%s:%d: ", docPath, line)+fmt.Sprintf(format, args...))
	}
	byID := make(map[string]statement, len(stmts))
	for _, s := range stmts {
		byID[s.id] = s
	}
	indexes := map[string]testIndex{}
	listed := map[string]int{} // id → line of its first row
	countsAt, stated := 0, ""
	for i, line := range strings.Split(doc, "\n") {
		n := i + 1
		if m := countsRE.FindStringSubmatch(line); m != nil {
			countsAt, stated = n, strings.Join(m[1:], ",")
		}
		trimmed := strings.TrimSpace(line)
		if !strings.HasPrefix(trimmed, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(trimmed, "|"), "|")
		id := strings.TrimSpace(cells[0])
		if !strings.HasPrefix(id, "MQTT-") {
			continue // a header, a separator, or another table
		}
		if len(cells) != 3 {
			problem(n, "%s: got %d cells, want 3 (| ID | summary | status |)", id, len(cells))
			continue
		}
		s, ok := byID[id]
		if !ok {
			problem(n, "%s is not in %s", id, statementsPath)
			continue
		}
		if first, dup := listed[id]; dup {
			problem(n, "%s listed twice (first on line %d)", id, first)
			continue
		}
		listed[id] = n
		if got := strings.TrimSpace(cells[1]); got != s.summary {
			problem(n, "%s: summary %q differs from %s: %q", id, got, statementsPath, s.summary)
		}
		c := &r.client
		if s.bindsServer() {
			c = &r.server
		}
		status := strings.TrimSpace(cells[2])
		switch {
		case notYetRE.MatchString(status):
			c.notYet++
		case naRE.MatchString(status):
			c.na++
		case refsRE.MatchString(status):
			bad := false
			for _, m := range refRE.FindAllStringSubmatch(status, -1) {
				rf := ref{dir: m[1], test: m[2], fragment: strings.TrimPrefix(m[3], "/")}
				if err := checkRef(root, indexes, rf, id); err != nil {
					problem(n, "%s: `%s: %s`: %v", id, rf.dir, rf.test, err)
					bad = true
				}
			}
			if refs := len(refRE.FindAllString(status, -1)); refs != strings.Count(status, "`")/2 {
				problem(n, "%s: a test reference is not of the form `dir: TestName/fragment`", id)
				bad = true
			}
			if !bad {
				c.covered++
			}
		default:
			problem(n, "%s: status %q is none of `dir: TestName/fragment`, \"not yet: <what is missing>\", \"n/a: <reason>\"", id, status)
		}
	}
	if countsAt > 0 {
		r.countsLine = true
		if got := fmt.Sprintf("%d,%d,%d", r.server.covered, r.server.notYet, r.server.na); got != stated {
			problem(countsAt, "the counts (covered, not yet, n/a) say %s; the rows say %s", stated, got)
		}
	}
	for _, s := range stmts {
		if _, ok := listed[s.id]; !ok && s.bindsServer() {
			r.problems = append(r.problems, fmt.Sprintf("%s: %s (%s) is missing", docPath, s.id, s.appliesTo))
		}
	}
	return r
}

// checkRef verifies that rf names an existing test whose names carry id and the fragment.
func checkRef(root string, indexes map[string]testIndex, rf ref, id string) error {
	dir := filepath.Clean(rf.dir)
	if filepath.IsAbs(dir) || strings.HasPrefix(dir, "..") {
		return fmt.Errorf("directory %q is not inside the repository", rf.dir)
	}
	idx, ok := indexes[dir]
	if !ok {
		var err error
		if idx, err = indexDir(filepath.Join(root, dir)); err != nil {
			return err
		}
		indexes[dir] = idx
	}
	names, ok := idx[rf.test]
	if !ok {
		return fmt.Errorf("no func %s( in %s/*_test.go", rf.test, rf.dir)
	}
	found := containsID(rf.test, strings.NewReplacer(".", "_", "-", "_").Replace(id))
	for _, n := range names {
		found = found || containsID(n, id)
	}
	if !found {
		return fmt.Errorf("%s is not in the name of %s or of any of its subtests", id, rf.test)
	}
	if rf.fragment == "" {
		return nil
	}
	for _, part := range strings.Split(rf.fragment, "/") {
		want := strings.ReplaceAll(part, " ", "_")
		match := false
		for _, n := range names {
			match = match || containsID(strings.ReplaceAll(n, " ", "_"), want)
		}
		if !match {
			return fmt.Errorf("no subtest name of %s contains %q", rf.test, part)
		}
	}
	return nil
}

// containsID reports whether s contains sub not followed by a digit, so that MQTT-3.1.2-1 is not
// found in MQTT-3.1.2-10.
func containsID(s, sub string) bool {
	if sub == "" {
		return false
	}
	for i := 0; ; {
		j := strings.Index(s[i:], sub)
		if j < 0 {
			return false
		}
		end := i + j + len(sub)
		if end == len(s) || !isDigit(s[end]) || !isDigit(sub[len(sub)-1]) {
			return true
		}
		i += j + 1
	}
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// testIndex maps each Test function of a directory to the names its subtests can have: the
// string literals given to t.Run (the format of an fmt.Sprintf), and the name field of the table
// rows the function uses, whether declared in its body or in a package-level variable it refers to.
type testIndex map[string][]string

// indexDir parses the _test.go files of dir.
func indexDir(dir string) (testIndex, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("directory: %w", err)
		}
		return nil, errors.New("directory has no _test.go files")
	}
	fset := token.NewFileSet()
	c := &collector{vars: map[string][]ast.Expr{}, types: map[string]*ast.StructType{}}
	var funcs []*ast.FuncDecl
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil && strings.HasPrefix(d.Name.Name, "Test") && d.Body != nil {
					funcs = append(funcs, d)
				}
			case *ast.GenDecl:
				c.addDecl(d)
			}
		}
	}
	idx := testIndex{}
	for _, fn := range funcs {
		w := &walk{c: c, seen: map[string]bool{}, local: map[string]*ast.StructType{}}
		w.node(fn.Body)
		idx[fn.Name.Name] = append(idx[fn.Name.Name], w.names...)
	}
	return idx, nil
}

// collector holds a directory's package-level table variables and struct types.
type collector struct {
	vars  map[string][]ast.Expr
	types map[string]*ast.StructType
}

func (c *collector) addDecl(d *ast.GenDecl) {
	for _, spec := range d.Specs {
		switch s := spec.(type) {
		case *ast.ValueSpec:
			for _, n := range s.Names {
				c.vars[n.Name] = append(c.vars[n.Name], s.Values...)
			}
		case *ast.TypeSpec:
			if st, ok := s.Type.(*ast.StructType); ok {
				c.types[s.Name.Name] = st
			}
		}
	}
}

// walk collects the subtest names of one Test function.
type walk struct {
	c     *collector
	seen  map[string]bool // package-level variables already visited
	local map[string]*ast.StructType
	names []string
}

func (w *walk) node(n ast.Node) {
	ast.Inspect(n, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.TypeSpec:
			if st, ok := n.Type.(*ast.StructType); ok {
				w.local[n.Name.Name] = st
			}
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Run" && len(n.Args) == 2 {
				w.runName(n.Args[0])
			}
		case *ast.KeyValueExpr:
			if k, ok := n.Key.(*ast.Ident); ok && k.Name == "name" {
				w.literal(n.Value)
			}
		case *ast.CompositeLit:
			w.tableRows(n)
		case *ast.Ident:
			if vals, ok := w.c.vars[n.Name]; ok && !w.seen[n.Name] {
				w.seen[n.Name] = true
				for _, v := range vals {
					w.node(v)
				}
			}
		}
		return true
	})
}

// runName records the first argument of t.Run: a literal, literals joined with +, or the format
// of fmt.Sprintf.
func (w *walk) runName(e ast.Expr) {
	switch e := e.(type) {
	case *ast.BasicLit:
		w.literal(e)
	case *ast.BinaryExpr:
		if e.Op == token.ADD {
			w.runName(e.X)
			w.runName(e.Y)
		}
	case *ast.CallExpr:
		if sel, ok := e.Fun.(*ast.SelectorExpr); ok && sel.Sel.Name == "Sprintf" && len(e.Args) > 0 {
			w.literal(e.Args[0])
		}
	}
}

// tableRows records the first element of unkeyed rows of a slice, array or map of structs whose
// first field is name.
func (w *walk) tableRows(lit *ast.CompositeLit) {
	var elt ast.Expr
	switch t := lit.Type.(type) {
	case *ast.ArrayType:
		elt = t.Elt
	case *ast.MapType:
		elt = t.Value
	default:
		return
	}
	if star, ok := elt.(*ast.StarExpr); ok {
		elt = star.X
	}
	var st *ast.StructType
	switch t := elt.(type) {
	case *ast.StructType:
		st = t
	case *ast.Ident:
		if st = w.local[t.Name]; st == nil {
			st = w.c.types[t.Name]
		}
	}
	if st == nil || len(st.Fields.List) == 0 || len(st.Fields.List[0].Names) == 0 || st.Fields.List[0].Names[0].Name != "name" {
		return
	}
	for _, e := range lit.Elts {
		if kv, ok := e.(*ast.KeyValueExpr); ok {
			e = kv.Value
		}
		if u, ok := e.(*ast.UnaryExpr); ok && u.Op == token.AND {
			e = u.X
		}
		row, ok := e.(*ast.CompositeLit)
		if !ok || len(row.Elts) == 0 {
			continue
		}
		if _, keyed := row.Elts[0].(*ast.KeyValueExpr); !keyed {
			w.literal(row.Elts[0])
		}
	}
}

// literal records e if it is a string literal.
func (w *walk) literal(e ast.Expr) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return
	}
	if s, err := strconv.Unquote(lit.Value); err == nil {
		w.names = append(w.names, s)
	}
}

// TestCheck runs check on a made-up repository and document: every kind of problem must be found,
// and nothing else.
func TestCheck(t *testing.T) {
	root := t.TempDir()
	src := `package x

import (
	"fmt"
	"testing"
)

var shared = []row{{"MQTT-1.1.1-3 shared row", 1}}

type row struct {
	name string
	n    int
}

func TestGood(t *testing.T) {
	t.Run("MQTT-1.1.1-1 literal", func(t *testing.T) {})
	for _, tc := range []struct{ name string }{{"MQTT-1.1.1-2 inline row"}} {
		t.Run(tc.name, func(t *testing.T) {})
	}
	for _, tc := range []struct{ name, stmt string }{{name: "keyed row", stmt: "MQTT-1.1.1-5"}} {
		t.Run(tc.name, func(t *testing.T) {})
	}
}

func TestShared(t *testing.T) {
	for _, r := range shared {
		t.Run(r.name, func(t *testing.T) {})
	}
}

func TestFormat(t *testing.T) {
	t.Run(fmt.Sprintf("MQTT-1.1.1-4 case %d", 1), func(t *testing.T) {})
	t.Run("MQTT-1.1.1-10 "+"joined", func(t *testing.T) {})
}

func TestMQTT_1_1_1_6(t *testing.T) {}
`
	if err := os.MkdirAll(filepath.Join(root, "pkg"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "pkg", "x_test.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	stmts := []statement{
		{id: "MQTT-1.1.1-1", appliesTo: "server", summary: "one"},
		{id: "MQTT-1.1.1-2", appliesTo: "both", summary: "two"},
		{id: "MQTT-1.1.1-3", appliesTo: "server", summary: "three"},
		{id: "MQTT-1.1.1-4", appliesTo: "client", summary: "four"},
	}
	valid := "| ID | Summary | Status |\n| --- | --- | --- |\n" +
		"| MQTT-1.1.1-1 | one | `pkg: TestGood/MQTT-1.1.1-1`, `pkg: TestGood/literal` |\n" +
		"| MQTT-1.1.1-2 | two | not yet: the inline row is not enough |\n" +
		"| MQTT-1.1.1-3 | three | `pkg: TestShared/MQTT-1.1.1-3 shared row` |\n" +
		"| MQTT-1.1.1-4 | four | `pkg: TestFormat` |\n"
	tests := []struct {
		name    string
		stmts   []statement
		doc     string
		want    []string // one substring per expected problem
		covered int
		tallies *[2]int // not yet and n/a rows, when checked
	}{
		{name: "valid document", doc: valid, covered: 3, tallies: &[2]int{1, 0}},
		{name: "n/a", doc: strings.Replace(valid, "not yet: the inline row is not enough", "n/a: made up", 1), covered: 3, tallies: &[2]int{0, 1}},
		{name: "inline table row", doc: strings.Replace(valid, "not yet: the inline row is not enough", "`pkg: TestGood/MQTT-1.1.1-2`", 1), covered: 4},
		{name: "missing statement", doc: strings.Replace(valid, "| MQTT-1.1.1-3 | three | `pkg: TestShared/MQTT-1.1.1-3 shared row` |\n", "", 1),
			want: []string{"MQTT-1.1.1-3 (server) is missing"}, covered: 2},
		{name: "client statements may be left out", doc: strings.Replace(valid, "| MQTT-1.1.1-4 | four | `pkg: TestFormat` |\n", "", 1), covered: 2},
		{name: "listed twice", doc: valid + "| MQTT-1.1.1-1 | one | n/a: again |\n", want: []string{"MQTT-1.1.1-1 listed twice (first on line 3)"}, covered: 3},
		{name: "unknown statement", doc: valid + "| MQTT-9.9.9-9 | nine | n/a: none |\n", want: []string{"MQTT-9.9.9-9 is not in"}, covered: 3},
		{name: "wrong number of cells", doc: valid + "| MQTT-1.1.1-4 | four |\n", want: []string{"got 2 cells, want 3"}, covered: 3},
		{name: "summary differs", doc: strings.Replace(valid, "| one |", "| uno |", 1), want: []string{`summary "uno" differs`}, covered: 3},
		{name: "status of no known form", doc: strings.Replace(valid, "not yet: the inline row is not enough", "done", 1), want: []string{`status "done" is none of`}, covered: 3},
		{name: "not yet without a reason", doc: strings.Replace(valid, "not yet: the inline row is not enough", "not yet", 1), want: []string{`status "not yet" is none of`}, covered: 3},
		{name: "n/a without a reason", doc: strings.Replace(valid, "not yet: the inline row is not enough", "n/a:", 1), want: []string{`status "n/a:" is none of`}, covered: 3},
		{name: "text beside a reference", doc: strings.Replace(valid, "`pkg: TestFormat` |", "`pkg: TestFormat` and more |", 1), want: []string{"status \"`pkg: TestFormat` and more\" is none of"}, covered: 2},
		{name: "malformed reference", doc: strings.Replace(valid, "`pkg: TestFormat` |", "`pkg TestFormat` |", 1), want: []string{"not of the form"}, covered: 2},
		{name: "missing directory", doc: strings.Replace(valid, "`pkg: TestFormat`", "`nowhere: TestFormat`", 1), want: []string{"`nowhere: TestFormat`: directory:"}, covered: 2},
		{name: "directory outside the repository", doc: strings.Replace(valid, "`pkg: TestFormat`", "`../pkg: TestFormat`", 1), want: []string{"not inside the repository"}, covered: 2},
		{name: "directory without tests", doc: strings.Replace(valid, "`pkg: TestFormat`", "`empty: TestFormat`", 1), want: []string{"no _test.go files"}, covered: 2},
		{name: "missing test function", doc: strings.Replace(valid, "`pkg: TestFormat`", "`pkg: TestNothing`", 1), want: []string{"no func TestNothing( in pkg/*_test.go"}, covered: 2},
		{name: "id not in the test's names", doc: strings.Replace(valid, "`pkg: TestShared/MQTT-1.1.1-3 shared row`", "`pkg: TestGood`", 1),
			want: []string{"MQTT-1.1.1-3 is not in the name of TestGood"}, covered: 2},
		{name: "id prefix of a longer id is no match",
			doc: strings.Replace(valid, "`pkg: TestGood/MQTT-1.1.1-1`, `pkg: TestGood/literal`", "`pkg: TestFormat`", 1), want: []string{"MQTT-1.1.1-1 is not in the name of TestFormat"}, covered: 2},
		{name: "fragment not in any subtest name", doc: strings.Replace(valid, "TestGood/literal", "TestGood/literally", 1), want: []string{`no subtest name of TestGood contains "literally"`}, covered: 2},
		{name: "fragment id must not be a prefix", doc: strings.Replace(valid, "`pkg: TestFormat`", "`pkg: TestFormat/MQTT-1.1.1-1`", 1), want: []string{`contains "MQTT-1.1.1-1"`}, covered: 2},
		{name: "keyed name field and joined literals", stmts: []statement{
			{id: "MQTT-1.1.1-5", appliesTo: "server", summary: "five"}, {id: "MQTT-1.1.1-10", appliesTo: "server", summary: "ten"}},
			doc:  "| MQTT-1.1.1-5 | five | `pkg: TestGood/keyed row` |\n| MQTT-1.1.1-10 | ten | `pkg: TestFormat/joined` |\n",
			want: []string{"MQTT-1.1.1-5 is not in the name of TestGood"}, covered: 1},
		{name: "counts line matches the rows", doc: "Today: 2 statements covered by tests, 1 not yet, 0 n/a.\n" + valid, covered: 3},
		{name: "counts line differs from the rows", doc: "Today: 3 statements covered by tests, 0 not yet, 0 n/a.\n" + valid,
			want: []string{"conformance.md:1: the counts (covered, not yet, n/a) say 3,0,0; the rows say 2,1,0"}, covered: 3},
		{name: "id in the function name", stmts: []statement{{id: "MQTT-1.1.1-6", appliesTo: "server", summary: "six"}},
			doc: "| MQTT-1.1.1-6 | six | `pkg: TestMQTT_1_1_1_6` |\n", covered: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := tt.stmts
			if st == nil {
				st = stmts
			}
			r := check(root, st, tt.doc)
			if len(r.problems) != len(tt.want) {
				t.Fatalf("got %d problems, want %d:\n%s", len(r.problems), len(tt.want), strings.Join(r.problems, "\n"))
			}
			for i, w := range tt.want {
				if !strings.Contains(r.problems[i], w) {
					t.Errorf("problem %d: got %q, want it to contain %q", i, r.problems[i], w)
				}
			}
			if got := r.server.covered + r.client.covered; got != tt.covered {
				t.Errorf("got %d covered, want %d", got, tt.covered)
			}
			if want := strings.Contains(tt.doc, "Today:"); r.countsLine != want {
				t.Errorf("got countsLine %v, want %v", r.countsLine, want)
			}
			if tt.tallies != nil {
				if got := [2]int{r.server.notYet + r.client.notYet, r.server.na + r.client.na}; got != *tt.tallies {
					t.Errorf("got [not yet, n/a] %v, want %v", got, *tt.tallies)
				}
			}
		})
	}
}

// TestReadStatements checks the statement list reader on malformed input.
func TestReadStatements(t *testing.T) {
	const header = "id\tsection\tapplies_to\tsummary\n"
	tests := []struct {
		name, text, want string
	}{
		{"valid", header + "MQTT-1.2.3-4\ts\tserver\tsum\n", ""},
		{"bad header", "id\tsection\tapplies\tsummary\n", "unexpected header"},
		{"three columns", header + "MQTT-1.2.3-4\ts\tserver\n", "got 3 columns"},
		{"malformed id", header + "MQTT-1.2.3\ts\tserver\tsum\n", "malformed id"},
		{"duplicate id", header + "MQTT-1.2.3-4\ts\tserver\tsum\nMQTT-1.2.3-4\ts\tboth\tsum\n", "listed twice"},
		{"unknown applies_to", header + "MQTT-1.2.3-4\ts\tbroker\tsum\n", "applies_to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.tsv")
			if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := readStatements(path)
			if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
				t.Fatalf("got error %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := readStatements(filepath.Join(t.TempDir(), "absent.tsv")); err == nil {
		t.Fatal("missing file: got no error")
	}
}
