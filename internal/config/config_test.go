package config

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestFlagWinsOverEnvOverDefault(t *testing.T) {
	c, err := LoadAPI([]string{"--addr", ":9000"}, env(map[string]string{
		"LIMITR_ADDR": ":7000", "LIMITR_DATABASE_URL": "postgres://u@127.0.0.1/db", "LIMITR_RATE_PERIOD": "30s",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Addr != ":9000" || c.RatePeriod != 30*time.Second || c.RateLimit != 60000 || !c.MigrateOnStart {
		t.Fatalf("%+v", c)
	}
}

func TestEveryProblemIsReported(t *testing.T) {
	_, err := LoadAPI([]string{"--rate-limit", "x", "--log-level", "loud", "--redis-url", "http://x"}, env(nil), io.Discard)
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{"database-url: required", "rate-limit", "log-level", "redis-url"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

func TestUnknownFlag(t *testing.T) {
	if _, err := LoadAPI([]string{"--nope"}, env(nil), io.Discard); err == nil {
		t.Fatal("want error")
	}
}
