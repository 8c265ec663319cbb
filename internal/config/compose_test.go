package config

import (
	"os"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/limitr/limitr/internal/secrets"
)

// This machine cannot run Docker, so the compose file is kept honest by reading it:
// every flag and LIMITR_* variable it passes must be one the binary accepts, and the
// binary's required settings must be provided.
func TestComposeMatchesBinaries(t *testing.T) {
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]struct {
			Command     []string          `yaml:"command"`
			Environment map[string]string `yaml:"environment"`
			DependsOn   map[string]any    `yaml:"depends_on"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	binaries := map[string][]Setting{"api": APISettings, "worker": WorkerSettings}
	for _, name := range []string{"postgres", "redis", "api", "worker"} {
		if _, ok := doc.Services[name]; !ok {
			t.Errorf("service %q is missing", name)
		}
	}
	for svc, settings := range binaries {
		s := doc.Services[svc]
		if len(s.Command) == 0 || s.Command[0] != svc {
			t.Errorf("%s: command must start with the %s binary, got %v", svc, svc, s.Command)
			continue
		}
		flags := map[string]bool{}
		envs := map[string]bool{}
		for _, st := range settings {
			flags["--"+st.Flag] = true
			envs[st.Env] = true
		}
		for _, arg := range s.Command[1:] {
			if strings.HasPrefix(arg, "-") && !flags[strings.SplitN(arg, "=", 2)[0]] {
				t.Errorf("%s: flag %s is not a flag of the binary", svc, arg)
			}
		}
		for k := range s.Environment {
			if strings.HasPrefix(k, "LIMITR_") && !envs[k] {
				t.Errorf("%s: %s is not a setting of the binary", svc, k)
			}
		}
		if _, ok := s.Environment["LIMITR_DATABASE_URL"]; !ok {
			t.Errorf("%s: LIMITR_DATABASE_URL is required", svc)
		}
		if !slices.Contains(mapKeys(s.DependsOn), "postgres") {
			t.Errorf("%s: must depend on postgres", svc)
		}
		// The values must also parse: run the binary's own validation on them.
		// Values compose interpolates from the operator's environment (${VAR:?...}) stand
		// for a valid value of their kind.
		key, kerr := secrets.GenerateKey()
		if kerr != nil {
			t.Fatal(kerr)
		}
		getenv := func(k string) string {
			v := s.Environment[k]
			if strings.HasPrefix(v, "${") {
				if k == secrets.EnvVar {
					return key
				}
				return "x"
			}
			return v
		}
		var err error
		args := slices.DeleteFunc(slices.Clone(s.Command[1:]), func(a string) bool { return a == "serve" })
		switch svc {
		case "api":
			t.Setenv("LIMITR_OPERATOR_TOKEN", "x")
			_, err = LoadAPI(args, getenv, os.Stderr)
		case "worker":
			_, err = LoadWorker(args, getenv, os.Stderr)
		}
		if err != nil && !strings.Contains(err.Error(), "operator") {
			t.Errorf("%s: its compose settings do not load: %v", svc, err)
		}
	}
}

func mapKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
