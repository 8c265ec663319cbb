// Package config reads the control plane's settings from flags and LIMITR_* environment
// variables. A flag wins over its environment variable, which wins over the default.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Setting documents one option: its flag, its environment variable and its default.
type Setting struct {
	Flag    string
	Env     string
	Default string
	Usage   string
}

// API is the API server's configuration.
type API struct {
	Addr            string
	DatabaseURL     string
	RedisURL        string
	OperatorToken   string
	MigrateOnStart  bool
	MaxBodyBytes    int64
	RateLimit       int
	RatePeriod      time.Duration
	ShutdownTimeout time.Duration
	LogLevel        slog.Level
}

// APISettings are the API server's options, in the order the README documents them.
var APISettings = []Setting{
	{"addr", "LIMITR_ADDR", ":8080", "address to listen on"},
	{"database-url", "LIMITR_DATABASE_URL", "", "Postgres URL (required), e.g. postgres://limitr@127.0.0.1:5432/limitr"},
	{"redis-url", "LIMITR_REDIS_URL", "", "Redis URL for fan-out, key revocation and rate limits; empty runs single-node"},
	{"operator-token", "LIMITR_OPERATOR_TOKEN", "", "token that authorises POST /v1/tenants; empty disables it"},
	{"migrate-on-start", "LIMITR_MIGRATE_ON_START", "true", "apply pending migrations at start (under an advisory lock)"},
	{"max-body-bytes", "LIMITR_MAX_BODY_BYTES", "1048576", "largest request body accepted"},
	{"rate-limit", "LIMITR_RATE_LIMIT", "60000", "requests per rate period per API key (an SDK fleet shares its key)"},
	{"rate-period", "LIMITR_RATE_PERIOD", "1m", "the rate limit's window"},
	{"shutdown-timeout", "LIMITR_SHUTDOWN_TIMEOUT", "15s", "how long to drain requests on SIGTERM"},
	{"log-level", "LIMITR_LOG_LEVEL", "info", "debug, info, warn or error"},
}

// Parse reads settings from args and getenv into string values by flag name.
func Parse(name string, settings []Setting, args []string, getenv func(string) string, output io.Writer) (map[string]string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)
	values := make(map[string]*string, len(settings))
	for _, s := range settings {
		def := s.Default
		if v := getenv(s.Env); v != "" {
			def = v
		}
		values[s.Flag] = fs.String(s.Flag, def, fmt.Sprintf("%s (env %s)", s.Usage, s.Env))
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	out := make(map[string]string, len(values))
	for k, v := range values {
		out[k] = *v
	}
	return out, nil
}

// LoadAPI parses and validates the API server's configuration.
func LoadAPI(args []string, getenv func(string) string, output io.Writer) (API, error) {
	v, err := Parse("api", APISettings, args, getenv, output)
	if err != nil {
		return API{}, err
	}
	return apiFromValues(v)
}

func apiFromValues(v map[string]string) (API, error) {
	var c API
	var errs []error
	var err error
	c.Addr = v["addr"]
	c.DatabaseURL = v["database-url"]
	c.RedisURL = v["redis-url"]
	c.OperatorToken = v["operator-token"]
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("database-url: required (flag --database-url or LIMITR_DATABASE_URL)"))
	} else if u, err := url.Parse(c.DatabaseURL); err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		errs = append(errs, fmt.Errorf("database-url: must be a postgres:// URL"))
	}
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			errs = append(errs, fmt.Errorf("redis-url: must be a redis:// URL"))
		}
	}
	if c.MigrateOnStart, err = strconv.ParseBool(v["migrate-on-start"]); err != nil {
		errs = append(errs, fmt.Errorf("migrate-on-start: %q is not true or false", v["migrate-on-start"]))
	}
	if c.MaxBodyBytes, err = strconv.ParseInt(v["max-body-bytes"], 10, 64); err != nil || c.MaxBodyBytes <= 0 {
		errs = append(errs, fmt.Errorf("max-body-bytes: %q is not a positive number", v["max-body-bytes"]))
	}
	if c.RateLimit, err = strconv.Atoi(v["rate-limit"]); err != nil || c.RateLimit <= 0 {
		errs = append(errs, fmt.Errorf("rate-limit: %q is not a positive number", v["rate-limit"]))
	}
	if c.RatePeriod, err = time.ParseDuration(v["rate-period"]); err != nil || c.RatePeriod <= 0 {
		errs = append(errs, fmt.Errorf("rate-period: %q is not a positive duration", v["rate-period"]))
	}
	if c.ShutdownTimeout, err = time.ParseDuration(v["shutdown-timeout"]); err != nil || c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown-timeout: %q is not a positive duration", v["shutdown-timeout"]))
	}
	if err := c.LogLevel.UnmarshalText([]byte(strings.ToUpper(v["log-level"]))); err != nil {
		errs = append(errs, fmt.Errorf("log-level: %q is not debug, info, warn or error", v["log-level"]))
	}
	return c, errors.Join(errs...)
}

// Worker is the background worker's configuration.
type Worker struct {
	DatabaseURL    string
	RedisURL       string
	MetricsAddr    string
	PollInterval   time.Duration
	BatchSize      int
	MigrateOnStart bool
	LogLevel       slog.Level
}

// WorkerSettings are the worker's options.
var WorkerSettings = []Setting{
	{"database-url", "LIMITR_DATABASE_URL", "", "Postgres URL (required)"},
	{"redis-url", "LIMITR_REDIS_URL", "", "Redis URL for wake-ups; empty polls"},
	{"metrics-addr", "LIMITR_WORKER_METRICS_ADDR", ":9090", "address serving /metrics and /healthz"},
	{"poll-interval", "LIMITR_WORKER_POLL_INTERVAL", "1s", "how often to look for work when not woken"},
	{"batch-size", "LIMITR_WORKER_BATCH_SIZE", "5000", "usage rows folded into meters per transaction"},
	{"migrate-on-start", "LIMITR_MIGRATE_ON_START", "true", "apply pending migrations at start (under an advisory lock)"},
	{"log-level", "LIMITR_LOG_LEVEL", "info", "debug, info, warn or error"},
}

// LoadWorker parses and validates the worker's configuration.
func LoadWorker(args []string, getenv func(string) string, output io.Writer) (Worker, error) {
	v, err := Parse("worker", WorkerSettings, args, getenv, output)
	if err != nil {
		return Worker{}, err
	}
	return workerFromValues(v)
}

func workerFromValues(v map[string]string) (Worker, error) {
	var c Worker
	var errs []error
	var err error
	c.DatabaseURL, c.RedisURL, c.MetricsAddr = v["database-url"], v["redis-url"], v["metrics-addr"]
	if c.DatabaseURL == "" {
		errs = append(errs, errors.New("database-url: required (flag --database-url or LIMITR_DATABASE_URL)"))
	}
	if c.PollInterval, err = time.ParseDuration(v["poll-interval"]); err != nil || c.PollInterval <= 0 {
		errs = append(errs, fmt.Errorf("poll-interval: %q is not a positive duration", v["poll-interval"]))
	}
	if c.BatchSize, err = strconv.Atoi(v["batch-size"]); err != nil || c.BatchSize <= 0 || c.BatchSize > 100000 {
		errs = append(errs, fmt.Errorf("batch-size: %q is not a number between 1 and 100000", v["batch-size"]))
	}
	if c.MigrateOnStart, err = strconv.ParseBool(v["migrate-on-start"]); err != nil {
		errs = append(errs, fmt.Errorf("migrate-on-start: %q is not true or false", v["migrate-on-start"]))
	}
	if err := c.LogLevel.UnmarshalText([]byte(strings.ToUpper(v["log-level"]))); err != nil {
		errs = append(errs, fmt.Errorf("log-level: %q is not debug, info, warn or error", v["log-level"]))
	}
	return c, errors.Join(errs...)
}

// DevSettings are the options of `limitr dev`: the API's, listening on loopback by
// default, plus the worker's job settings. The worker's metrics are served on the API's
// /metrics, so it has no metrics address of its own.
var DevSettings = devSettings()

func devSettings() []Setting {
	out := make([]Setting, 0, len(APISettings)+2)
	for _, s := range APISettings {
		if s.Flag == "addr" {
			s.Default = "127.0.0.1:8080"
		}
		out = append(out, s)
	}
	for _, s := range WorkerSettings {
		if s.Flag == "poll-interval" || s.Flag == "batch-size" {
			out = append(out, s)
		}
	}
	return out
}

// LoadDev parses `limitr dev`'s configuration into the API's and the worker's.
func LoadDev(args []string, getenv func(string) string, output io.Writer) (API, Worker, error) {
	v, err := Parse("dev", DevSettings, args, getenv, output)
	if err != nil {
		return API{}, Worker{}, err
	}
	a, aerr := apiFromValues(v)
	v["metrics-addr"] = ""
	w, werr := workerFromValues(v)
	if werr != nil {
		// database-url problems are reported once, by the API's validation.
		var rest []error
		for _, e := range unwrapJoined(werr) {
			if !strings.HasPrefix(e.Error(), "database-url:") {
				rest = append(rest, e)
			}
		}
		werr = errors.Join(rest...)
	}
	return a, w, errors.Join(aerr, werr)
}

func unwrapJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
