package repocheck

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const root = "../.."

// Every fuzz target in the repository runs in `make fuzz`, in its own package.
func TestMakeFuzzRunsEveryFuzzer(t *testing.T) {
	makefile, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	fuzzDecl := regexp.MustCompile(`(?m)^func (Fuzz\w+)\(`)
	found := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		pkg := "./" + filepath.ToSlash(filepath.Dir(strings.TrimPrefix(path, root+"/"))) + "/"
		for _, m := range fuzzDecl.FindAllStringSubmatch(string(src), -1) {
			found++
			line := regexp.MustCompile(`-fuzz ` + m[1] + ` -fuzztime \S+ ` + regexp.QuoteMeta(pkg) + `\s`)
			if !line.Match(makefile) {
				t.Errorf("%s (%s) is not run by `make fuzz`: add `$(GO) test -run '^$$$$' -fuzz %s -fuzztime 30s %s`", m[1], path, m[1], pkg)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found < 10 {
		t.Fatalf("found only %d fuzz targets: is the walk broken?", found)
	}
}

// The README's layout section names every package of the module.
func TestREADMELayoutListsEveryPackage(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	layout := string(readme)
	if i := strings.Index(layout, "## Layout"); i >= 0 {
		layout = layout[i:]
	} else {
		t.Fatal("README has no Layout section")
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin") {
			return filepath.SkipDir
		}
		goFiles, _ := filepath.Glob(filepath.Join(path, "*.go"))
		if len(goFiles) == 0 || path == root {
			return nil
		}
		rel := filepath.ToSlash(strings.TrimPrefix(path, root+"/")) + "/"
		if !strings.Contains(layout, rel) {
			t.Errorf("the README's layout does not list %s", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
