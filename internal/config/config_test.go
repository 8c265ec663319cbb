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

// The alert URLs reach the API, the worker and `limitr dev` alike.
func TestAlertURLs(t *testing.T) {
	db := map[string]string{"LIMITR_DATABASE_URL": "postgres://u@127.0.0.1/db"}
	a, err := LoadAPI(nil, env(db), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if a.SlackAPIURL != "https://slack.com/api/" || a.PublicURL != "" {
		t.Errorf("defaults: %q %q", a.SlackAPIURL, a.PublicURL)
	}
	db["LIMITR_SLACK_API_URL"] = "http://127.0.0.1:8888/api"
	db["LIMITR_PUBLIC_URL"] = "https://dash.example.com/"
	w, err := LoadWorker(nil, env(db), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if w.SlackAPIURL != "http://127.0.0.1:8888/api/" || w.PublicURL != "https://dash.example.com" {
		t.Errorf("worker: %q %q", w.SlackAPIURL, w.PublicURL)
	}
	da, dw, err := LoadDev([]string{"--slack-api-url", "https://slack.internal/api/", "--public-url", "http://localhost:3000"}, env(db), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, got := range [][2]string{{da.SlackAPIURL, da.PublicURL}, {dw.SlackAPIURL, dw.PublicURL}} {
		if got != [2]string{"https://slack.internal/api/", "http://localhost:3000"} {
			t.Errorf("dev: %q", got)
		}
	}
	// Private alert destinations: refused by default, allowed in dev.
	if a.AllowPrivateAlertDestinations || w.AllowPrivateAlertDestinations || !da.AllowPrivateAlertDestinations || !dw.AllowPrivateAlertDestinations {
		t.Errorf("allow-private-alert-destinations: api %v worker %v dev %v/%v", a.AllowPrivateAlertDestinations,
			w.AllowPrivateAlertDestinations, da.AllowPrivateAlertDestinations, dw.AllowPrivateAlertDestinations)
	}
	if w, err := LoadWorker([]string{"--allow-private-alert-destinations=true"}, env(db), io.Discard); err != nil || !w.AllowPrivateAlertDestinations {
		t.Errorf("worker with the flag: %v %v", w.AllowPrivateAlertDestinations, err)
	}
	if w.AlertSweepInterval != 5*time.Minute || dw.AlertSweepInterval != 5*time.Minute {
		t.Errorf("alert-sweep-interval defaults: %v %v", w.AlertSweepInterval, dw.AlertSweepInterval)
	}
	if w, err := LoadWorker([]string{"--alert-sweep-interval", "30s"}, env(db), io.Discard); err != nil || w.AlertSweepInterval != 30*time.Second {
		t.Errorf("alert-sweep-interval 30s: %v %v", w.AlertSweepInterval, err)
	}
	if _, err := LoadWorker([]string{"--alert-sweep-interval", "10ms"}, env(db), io.Discard); err == nil || !strings.Contains(err.Error(), "alert-sweep-interval") {
		t.Errorf("alert-sweep-interval 10ms: %v", err)
	}
	_, err = LoadAPI([]string{"--slack-api-url", "slack.com/api", "--public-url", "ftp://x", "--allow-private-alert-destinations=maybe"}, env(db), io.Discard)
	for _, want := range []string{"slack-api-url", "public-url", "allow-private-alert-destinations"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}
