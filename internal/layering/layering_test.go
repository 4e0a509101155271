// Package layering holds the test that keeps coffre's layers one-way:
// repository ← sources ← control plane ← surfaces (see DESIGN.md).
package layering

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/coffre/coffre/"

// rank orders the layers; a package may import only packages of its own or a
// lower rank. Packages not listed (clock, hint, testutil) are shared helpers
// of rank 0.
var layers = []struct {
	prefix string
	rank   int
}{
	{"internal/repo", 1},
	{"internal/source", 2},
	{"internal/catalog", 3},
	{"internal/policy", 3},
	{"internal/scheduler", 3},
	{"internal/jobs", 3},
	{"internal/lifecycle", 3},
	{"internal/restoretest", 3},
	{"internal/report", 3},
	{"internal/api", 4},
	{"internal/server", 4},
	{"internal/web", 4},
	{"internal/notify", 4},
	{"cmd", 5},
}

func rankOf(rel string) int {
	for _, l := range layers {
		if rel == l.prefix || strings.HasPrefix(rel, l.prefix+"/") {
			return l.rank
		}
	}
	return 0
}

func TestLayersAreOneWay(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "bin" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		relFile, _ := filepath.Rel(root, p)
		pkg := filepath.ToSlash(filepath.Dir(relFile))
		f, err := parser.ParseFile(token.NewFileSet(), p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			if !strings.HasPrefix(path, module) {
				continue
			}
			dep := strings.TrimPrefix(path, module)
			if rankOf(dep) > rankOf(pkg) {
				t.Errorf("%s imports %s: a lower layer must not depend on a higher one (repo ← source ← control plane ← surfaces)", relFile, dep)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("only %d files checked: is the walk rooted at the module?", checked)
	}
}
