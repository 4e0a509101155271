package config

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.json")

// golden is what a golden file holds: the resolved policy set and the
// module outputs.
type golden struct {
	Resolved *Resolved          `json:"resolved"`
	Outputs  map[string]Outputs `json:"outputs"`
}

func TestGoldenEnvironments(t *testing.T) {
	for _, env := range []string{"development", "staging", "production"} {
		t.Run(env, func(t *testing.T) {
			in := filepath.Join("testdata", env+".hcl")
			cfg, diags := Load(in)
			if len(diags) > 0 {
				t.Fatalf("Load: %v", diags)
			}
			res, diags := cfg.Expand()
			if len(diags) > 0 {
				t.Fatalf("Expand: %v", diags)
			}
			got, err := json.MarshalIndent(golden{Resolved: res, Outputs: res.Outputs()}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", env+".golden.json")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the expansion of %s; got:\n%s", path, in, got)
			}
		})
	}
}
