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

	"github.com/limitr/limitr/internal/retention"
	"github.com/limitr/limitr/internal/secrets"
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
	Addr              string
	MetricsAddr       string
	DatabaseURL       string
	RedisURL          string
	OperatorToken     string
	MigrateOnStart    bool
	MaxBodyBytes      int64
	RateLimit         int
	RatePeriod        time.Duration
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	ShutdownTimeout   time.Duration
	LogLevel          slog.Level
	// Secrets is the keyring from LIMITR_SECRET_KEY; nil when it is not set.
	Secrets *secrets.Keyring
	// StripeAPIBase is Stripe's API URL, or a Stripe-compatible one (stripe-mock).
	StripeAPIBase string
	// SlackAPIURL is Slack's Web API base URL (ends in "/"), or a Slack-compatible one.
	SlackAPIURL string
	// PublicURL is the dashboard's public base URL; empty: alert messages carry no link.
	PublicURL string
	// AllowPrivateAlertDestinations lets alert channels reach private addresses.
	AllowPrivateAlertDestinations bool
	// CookieSecure marks the dashboard's cookies Secure on plain-HTTP requests too
	// (behind a proxy that terminates TLS).
	CookieSecure bool
	// SessionIdleTimeout and SessionLifetime end dashboard sessions.
	SessionIdleTimeout time.Duration
	SessionLifetime    time.Duration
	// LeaseTTL is how long an allowance lease lives without being renewed.
	LeaseTTL time.Duration
}

// stripeAPIBase is shared by the API, the worker and `limitr dev`.
var stripeAPIBase = Setting{"stripe-api-base", "LIMITR_STRIPE_API_BASE", "https://api.stripe.com", "Stripe's API URL; point it at a Stripe-compatible server (stripe-mock) to test"}

// slackAPIURL and publicURL are shared by the API, the worker and `limitr dev`: the API
// sends test alerts, the worker delivers them.
var (
	slackAPIURL = Setting{"slack-api-url", "LIMITR_SLACK_API_URL", "https://slack.com/api/", "Slack's Web API base URL; point it at a Slack-compatible server for tests and proxies"}
	publicURL   = Setting{"public-url", "LIMITR_PUBLIC_URL", "", "the dashboard's public base URL; alert messages link customers there"}
	// allowPrivate defaults to false on the API and the worker, true in `limitr dev`.
	allowPrivate = Setting{"allow-private-alert-destinations", "LIMITR_ALLOW_PRIVATE_ALERT_DESTINATIONS", "false",
		"let alert channels send to loopback and private addresses (webhook URLs, Slack incoming webhooks, SMTP hosts); off, a tenant cannot reach the control plane's own network"}
)

// secretKey is shared by the API, the worker and `limitr dev`.
var secretKey = Setting{"secret-key", secrets.EnvVar, "", "keyring sealing secrets at rest: comma-separated keys, newest first (make one with `limitr admin gen-secret-key`); prefer the environment variable to the flag"}

// APISettings are the API server's options, in the order the README documents them.
var APISettings = []Setting{
	{"addr", "LIMITR_ADDR", ":8080", "address to listen on"},
	{"metrics-addr", "LIMITR_METRICS_ADDR", ":9091", "address serving /metrics (Prometheus), apart from the API; empty disables it"},
	{"database-url", "LIMITR_DATABASE_URL", "", "Postgres URL (required), e.g. postgres://limitr@127.0.0.1:5432/limitr"},
	{"redis-url", "LIMITR_REDIS_URL", "", "Redis URL for fan-out, key revocation and rate limits; empty runs single-node"},
	{"operator-token", "LIMITR_OPERATOR_TOKEN", "", "token that authorises POST /v1/tenants; empty disables it"},
	{"migrate-on-start", "LIMITR_MIGRATE_ON_START", "true", "apply pending migrations at start (under an advisory lock)"},
	{"max-body-bytes", "LIMITR_MAX_BODY_BYTES", "1048576", "largest request body accepted"},
	{"rate-limit", "LIMITR_RATE_LIMIT", "60000", "requests per rate period per API key (an SDK fleet shares its key)"},
	{"rate-period", "LIMITR_RATE_PERIOD", "1m", "the rate limit's window"},
	{"read-header-timeout", "LIMITR_READ_HEADER_TIMEOUT", "10s", "how long a client may take to send a request's headers"},
	{"read-timeout", "LIMITR_READ_TIMEOUT", "30s", "how long a client may take to send a whole request, body included"},
	{"shutdown-timeout", "LIMITR_SHUTDOWN_TIMEOUT", "15s", "how long to drain requests on SIGTERM"},
	secretKey,
	stripeAPIBase,
	slackAPIURL,
	publicURL,
	allowPrivate,
	{"cookie-secure", "LIMITR_COOKIE_SECURE", "false", "mark the dashboard's cookies Secure (and name them __Host-…) even on plain-HTTP requests: set it behind a proxy that terminates TLS; HTTPS requests get Secure cookies anyway"},
	{"session-idle-timeout", "LIMITR_SESSION_IDLE_TIMEOUT", "8h", "a dashboard session unused this long ends"},
	{"session-lifetime", "LIMITR_SESSION_LIFETIME", "168h", "a dashboard session ends this long after login, used or not"},
	{"lease-ttl", "LIMITR_LEASE_TTL", "15s", "how long an SDK instance's allowance lease (fleet mode Exact) lives without being renewed"},
	{"log-level", "LIMITR_LOG_LEVEL", "info", "debug, info, warn or error"},
}

// Select picks settings by flag name, in the order given.
func Select(settings []Setting, flags ...string) []Setting {
	var out []Setting
	for _, f := range flags {
		for _, s := range settings {
			if s.Flag == f {
				out = append(out, s)
			}
		}
	}
	return out
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
	c.Addr, c.MetricsAddr = v["addr"], v["metrics-addr"]
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
	if c.ReadHeaderTimeout, err = time.ParseDuration(v["read-header-timeout"]); err != nil || c.ReadHeaderTimeout <= 0 {
		errs = append(errs, fmt.Errorf("read-header-timeout: %q is not a positive duration", v["read-header-timeout"]))
	}
	if c.ReadTimeout, err = time.ParseDuration(v["read-timeout"]); err != nil || c.ReadTimeout <= 0 {
		errs = append(errs, fmt.Errorf("read-timeout: %q is not a positive duration", v["read-timeout"]))
	}
	if c.Secrets, err = parseSecrets(v); err != nil {
		errs = append(errs, err)
	}
	if c.StripeAPIBase, err = parseStripeAPIBase(v); err != nil {
		errs = append(errs, err)
	}
	if c.SlackAPIURL, c.PublicURL, err = parseAlertURLs(v); err != nil {
		errs = append(errs, err)
	}
	if c.AllowPrivateAlertDestinations, err = strconv.ParseBool(v["allow-private-alert-destinations"]); err != nil {
		errs = append(errs, fmt.Errorf("allow-private-alert-destinations: %q is not true or false", v["allow-private-alert-destinations"]))
	}
	if err := c.LogLevel.UnmarshalText([]byte(strings.ToUpper(v["log-level"]))); err != nil {
		errs = append(errs, fmt.Errorf("log-level: %q is not debug, info, warn or error", v["log-level"]))
	}
	if err := parseDashboard(v, &c); err != nil {
		errs = append(errs, err)
	}
	if c.LeaseTTL, err = time.ParseDuration(v["lease-ttl"]); err != nil || c.LeaseTTL < time.Second || c.LeaseTTL > time.Hour {
		errs = append(errs, fmt.Errorf("lease-ttl: %q is not a duration from 1s to 1h", v["lease-ttl"]))
	}
	return c, errors.Join(errs...)
}

// parseDashboard reads the dashboard's cookie and session settings.
func parseDashboard(v map[string]string, c *API) error {
	var errs []error
	var err error
	if c.CookieSecure, err = strconv.ParseBool(v["cookie-secure"]); err != nil {
		errs = append(errs, fmt.Errorf("cookie-secure: %q is not true or false", v["cookie-secure"]))
	}
	if c.SessionIdleTimeout, err = time.ParseDuration(v["session-idle-timeout"]); err != nil || c.SessionIdleTimeout < time.Minute {
		errs = append(errs, fmt.Errorf("session-idle-timeout: %q is not a duration of at least 1m", v["session-idle-timeout"]))
	}
	if c.SessionLifetime, err = time.ParseDuration(v["session-lifetime"]); err != nil || c.SessionLifetime < c.SessionIdleTimeout {
		errs = append(errs, fmt.Errorf("session-lifetime: %q is not a duration at least as long as session-idle-timeout", v["session-lifetime"]))
	}
	return errors.Join(errs...)
}

func parseSecrets(v map[string]string) (*secrets.Keyring, error) {
	spec := v["secret-key"]
	if spec == "" {
		return nil, nil
	}
	kr, err := secrets.ParseKeyring(spec)
	if err != nil {
		return nil, fmt.Errorf("secret-key: %w", err)
	}
	return kr, nil
}

func parseStripeAPIBase(v map[string]string) (string, error) {
	base := v["stripe-api-base"]
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", fmt.Errorf("stripe-api-base: %q is not an http(s) URL", base)
	}
	return strings.TrimRight(base, "/"), nil
}

// parseAlertURLs reads --slack-api-url (an http(s) URL, given a trailing "/" as
// Slack's client expects) and --public-url (empty, or an http(s) URL).
func parseAlertURLs(v map[string]string) (slackURL, public string, err error) {
	var errs []error
	slackURL = v["slack-api-url"]
	if !isHTTPURL(slackURL) {
		errs = append(errs, fmt.Errorf("slack-api-url: %q is not an http(s) URL", slackURL))
	} else if !strings.HasSuffix(slackURL, "/") {
		slackURL += "/"
	}
	public = v["public-url"]
	if public != "" && !isHTTPURL(public) {
		errs = append(errs, fmt.Errorf("public-url: %q is not an http(s) URL", public))
	}
	return slackURL, strings.TrimRight(public, "/"), errors.Join(errs...)
}

func isHTTPURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// Worker is the background worker's configuration.
type Worker struct {
	DatabaseURL  string
	RedisURL     string
	MetricsAddr  string
	PollInterval time.Duration
	BatchSize    int
	// AlertSweepInterval is how often the usage alert rules sweep every customer.
	AlertSweepInterval time.Duration
	MigrateOnStart     bool
	LogLevel           slog.Level
	Retention          retention.Policy
	// Secrets opens the Stripe secrets the billing jobs use; nil when not set.
	Secrets       *secrets.Keyring
	StripeAPIBase string
	// SlackAPIURL, PublicURL and AllowPrivateAlertDestinations are as the API's: the
	// worker delivers alerts.
	SlackAPIURL                   string
	PublicURL                     string
	AllowPrivateAlertDestinations bool
}

// WorkerSettings are the worker's options.
var WorkerSettings = []Setting{
	{"database-url", "LIMITR_DATABASE_URL", "", "Postgres URL (required)"},
	{"redis-url", "LIMITR_REDIS_URL", "", "Redis URL for wake-ups; empty polls"},
	{"metrics-addr", "LIMITR_WORKER_METRICS_ADDR", ":9090", "address serving /metrics and /healthz"},
	{"poll-interval", "LIMITR_WORKER_POLL_INTERVAL", "1s", "how often to look for work when not woken"},
	{"batch-size", "LIMITR_WORKER_BATCH_SIZE", "5000", "usage rows folded into meters per transaction"},
	{"alert-sweep-interval", "LIMITR_ALERT_SWEEP_INTERVAL", "5m", "how often every customer with recent usage is evaluated against the usage alert rules, besides after each batch"},
	{"migrate-on-start", "LIMITR_MIGRATE_ON_START", "true", "apply pending migrations at start (under an advisory lock)"},
	{"log-level", "LIMITR_LOG_LEVEL", "info", "debug, info, warn or error"},
	secretKey,
	stripeAPIBase,
	slackAPIURL,
	publicURL,
	allowPrivate,
	{"retention-idempotency", "LIMITR_RETENTION_IDEMPOTENCY", "24h", "how long replies to POSTs with an Idempotency-Key are kept for retries"},
	{"retention-usage-batches", "LIMITR_RETENTION_USAGE_BATCHES", "35d", "how long usage-batch keys are kept to deduplicate retries (older batches are kept as unattributed, batch_expired)"},
	{"retention-change-feed", "LIMITR_RETENTION_CHANGE_FEED", "7d", "how long change-feed entries are kept for SDK streams to resume from (older cursors resynchronise)"},
	{"retention-audit-log", "LIMITR_RETENTION_AUDIT_LOG", "400d", "how long audit-log entries are kept; 0 keeps them forever"},
	{"retention-unattributed", "LIMITR_RETENTION_UNATTRIBUTED", "90d", "how long unattributed usage records are kept; 0 keeps them forever"},
	{"retention-usage", "LIMITR_RETENTION_USAGE", "90d", "how long raw usage (daily partitions of deltas and audit events) is kept once aggregated; 0 keeps it forever"},
	{"retention-sdk-events", "LIMITR_RETENTION_SDK_EVENTS", "90d", "how long engine events forwarded by SDKs for alerts (and their batch keys) are kept; 0 keeps them forever"},
	{"retention-analytics-hourly", "LIMITR_RETENTION_ANALYTICS_HOURLY", "90d", "how long hourly analytics rollups are kept (margins by hour, windows edged inside a day); 0 keeps them forever"},
	{"retention-analytics-daily", "LIMITR_RETENTION_ANALYTICS_DAILY", "0", "how long daily analytics rollups and running totals are kept (margins of older windows cannot be answered); 0 keeps them forever"},
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
	if c.AlertSweepInterval, err = time.ParseDuration(v["alert-sweep-interval"]); err != nil || c.AlertSweepInterval < time.Second {
		errs = append(errs, fmt.Errorf("alert-sweep-interval: %q is not a duration of at least 1s", v["alert-sweep-interval"]))
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
	for _, r := range []struct {
		flag string
		dst  *time.Duration
	}{{"retention-idempotency", &c.Retention.IdempotencyKeys}, {"retention-usage-batches", &c.Retention.UsageBatches},
		{"retention-change-feed", &c.Retention.ChangeFeed}, {"retention-audit-log", &c.Retention.AuditLog},
		{"retention-unattributed", &c.Retention.Unattributed}, {"retention-usage", &c.Retention.UsagePartitions},
		{"retention-sdk-events", &c.Retention.SDKEvents}, {"retention-analytics-hourly", &c.Retention.AnalyticsHourly},
		{"retention-analytics-daily", &c.Retention.AnalyticsDaily}} {
		d, err := ParseDays(v[r.flag])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.flag, err))
			continue
		}
		*r.dst = d
	}
	c.Retention.ExpiredLeases = retention.LeaseGrace
	if err := c.Retention.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Secrets, err = parseSecrets(v); err != nil {
		errs = append(errs, err)
	}
	if c.StripeAPIBase, err = parseStripeAPIBase(v); err != nil {
		errs = append(errs, err)
	}
	if c.SlackAPIURL, c.PublicURL, err = parseAlertURLs(v); err != nil {
		errs = append(errs, err)
	}
	if c.AllowPrivateAlertDestinations, err = strconv.ParseBool(v["allow-private-alert-destinations"]); err != nil {
		errs = append(errs, fmt.Errorf("allow-private-alert-destinations: %q is not true or false", v["allow-private-alert-destinations"]))
	}
	return c, errors.Join(errs...)
}

// ParseDays reads a duration that may be written in days ("35d", "1.5d") as well as
// any Go duration ("24h", "90m"); "0" is zero.
func ParseDays(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	if n, ok := strings.CutSuffix(s, "d"); ok {
		f, err := strconv.ParseFloat(n, 64)
		if err != nil || f < 0 || f > 100*365 {
			return 0, fmt.Errorf("%q is not a number of days", s)
		}
		return time.Duration(f * float64(24*time.Hour)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration such as 24h or 35d", s)
	}
	return d, nil
}

// DevSettings are the options of `limitr dev`: the API's, listening on loopback by
// default, plus the worker's job settings. The worker's metrics are served on the API's
// /metrics, so it has no metrics address of its own.
var DevSettings = devSettings()

func devSettings() []Setting {
	out := make([]Setting, 0, len(APISettings)+2)
	for _, s := range APISettings {
		switch s.Flag {
		case "addr":
			s.Default = "127.0.0.1:8080"
		case "metrics-addr":
			s.Default = "127.0.0.1:0" // any free port: `limitr dev` prints it
		case "allow-private-alert-destinations":
			s.Default = "true" // local receivers, on a developer's machine
		}
		out = append(out, s)
	}
	for _, s := range WorkerSettings {
		if s.Flag == "poll-interval" || s.Flag == "batch-size" || s.Flag == "alert-sweep-interval" || strings.HasPrefix(s.Flag, "retention-") {
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
