// Package stripe mirrors our invoices into Stripe: customers, products and prices,
// invoices with their items, their lifecycle (finalize, void, uncollectible, paid out of
// band), credit notes, and the webhooks that bring payment status back. Stripe is a
// mirror, not the source of truth: callers (River jobs) push what Postgres already
// decided, and nothing here decides anything about money.
//
// It wraps github.com/stripe/stripe-go/v76 with one *client.API per Client, built from
// its own backends: no global key, backend or logger of stripe-go is read or set, so
// tenants with different keys can share a process.
//
// # Idempotency
//
// Every call that changes something takes an explicit idempotency key, sent as the
// Idempotency-Key header exactly as given. Derive it from our own ids and the step, so a
// retried job sends the same key (see IdempotencyKey): "limitr:inv:<uuid>:create",
// "limitr:inv:<uuid>:item:<line>", "limitr:inv:<uuid>:finalize". Stripe then runs the
// request once and replays the saved response to every retry, a saved 500 included
// (requests refused before they ran, such as a 400 for bad parameters or a 409 for a
// concurrent request with the key, are not saved). Three rules follow:
//   - A key must always be sent with the same parameters: the same key with other
//     parameters is refused (a permanent idempotency_error), so build the parameters from
//     frozen data (a finalized invoice), never from something that changes between tries.
//   - Stripe forgets keys after 24 hours, so idempotency is not a database: store the ids
//     a call returns before the job completes, and look them up instead of creating again.
//   - Keys are scoped to the Stripe account. Our ids are unique, so keys built from them
//     stay apart even when tenants or environments share an account; two different
//     operations on one object must differ in the step.
//
// # Errors and retries
//
// stripe-go's own retries are off: the job queue retries, with backoff, whatever this
// package classifies as ErrRetryable (see Error). Amounts are integers in Stripe's unit
// for the currency: convert decimal amounts with StripeAmount, not by hand.
package stripe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
	"github.com/stripe/stripe-go/v76/client"
)

// DefaultAPIBase is Stripe's API.
const DefaultAPIBase = stripego.APIURL

// defaultTimeout is stripe-go's own default. The caller's context usually ends sooner
// (a River job has a timeout); this only bounds a call made without one.
const defaultTimeout = 80 * time.Second

// Client calls Stripe with one tenant's secret key. It is safe for concurrent use.
type Client struct {
	api *client.API
	// redact removes the secret key from text that leaves the package (error messages,
	// logs). It is a closure so that printing a Client with %+v cannot show the key.
	redact  func(string) string
	apiBase string
}

// Option configures a Client.
type Option func(*options)

type options struct {
	apiBase    string
	httpClient *http.Client
	logger     *slog.Logger
}

// WithAPIBase sends requests to another base URL than Stripe's, such as a stripe-mock
// ("http://127.0.0.1:12111"). The flag is --stripe-api-base (LIMITR_STRIPE_API_BASE).
func WithAPIBase(apiBase string) Option { return func(o *options) { o.apiBase = apiBase } }

// WithHTTPClient sets the HTTP client; its Timeout bounds each request. The default has
// an 80-second timeout, like stripe-go's.
func WithHTTPClient(hc *http.Client) Option { return func(o *options) { o.httpClient = hc } }

// WithLogger sends stripe-go's own messages (requests made, response bodies, errors) to
// l at debug level, with the secret key removed. They are debug only: every error is
// also returned, and response bodies hold customers' names and emails. The default
// discards them.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// New returns a Client for one secret (or restricted) key.
func New(secretKey string, opts ...Option) (*Client, error) {
	if secretKey == "" {
		return nil, errors.New("stripe: the secret key is empty")
	}
	if strings.ContainsFunc(secretKey, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return nil, errors.New("stripe: the secret key has spaces or control characters") // it would break the header
	}
	o := options{apiBase: DefaultAPIBase}
	for _, opt := range opts {
		opt(&o)
	}
	u, err := url.Parse(o.apiBase)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("stripe: API base %q is not an http(s) URL without query", o.apiBase)
	}
	hc := o.httpClient
	if hc == nil {
		hc = &http.Client{Timeout: defaultTimeout}
	}
	// A copy, so the caller's client is not changed, with a transport that tells the
	// call which status came back (see classify).
	recording := *hc
	base := hc.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	recording.Transport = statusTransport{base: base}

	redact := func(s string) string { return strings.ReplaceAll(s, secretKey, "[redacted]") }
	var logger stripego.LeveledLoggerInterface = &stripego.LeveledLogger{Level: stripego.LevelNull}
	if o.logger != nil {
		logger = slogLogger{l: o.logger, redact: redact}
	}
	backend := func(typ stripego.SupportedBackend, u string) stripego.Backend {
		// GetBackendWithConfig fills the config in, so each backend gets its own.
		return stripego.GetBackendWithConfig(typ, &stripego.BackendConfig{
			URL:               stripego.String(u),
			HTTPClient:        &recording,
			MaxNetworkRetries: stripego.Int64(0), // the job queue retries
			LeveledLogger:     logger,
			EnableTelemetry:   stripego.Bool(false),
		})
	}
	backends := &stripego.Backends{
		API: backend(stripego.APIBackend, o.apiBase),
		// Not used by this package; configured anyway so that client.New does not fall
		// back to stripe-go's global backends.
		Connect: backend(stripego.ConnectBackend, stripego.ConnectURL),
		Uploads: backend(stripego.UploadsBackend, stripego.UploadsURL),
	}
	return &Client{api: client.New(secretKey, backends), redact: redact, apiBase: o.apiBase}, nil
}

// APIBase returns the base URL the Client sends requests to.
func (c *Client) APIBase() string { return c.apiBase }

// IdempotencyKey derives an idempotency key from our ids and the step:
// IdempotencyKey("inv", id, "create") is "limitr:inv:<id>:create".
func IdempotencyKey(parts ...string) string { return "limitr:" + strings.Join(parts, ":") }

// maxIdempotencyKey is Stripe's limit.
const maxIdempotencyKey = 255

func checkIdempotencyKey(op, key string) error {
	if key == "" {
		return invalidInput(op, "an idempotency key is required")
	}
	if len(key) > maxIdempotencyKey {
		return invalidInput(op, "idempotency key longer than %d bytes", maxIdempotencyKey)
	}
	if strings.TrimSpace(key) != key || strings.ContainsFunc(key, func(r rune) bool { return r < ' ' || r >= 0x7f }) {
		// stripe-go trims keys, and a header cannot carry control characters: refuse
		// rather than send another key than the one given.
		return invalidInput(op, "idempotency key %q has surrounding spaces or non-ASCII characters", key)
	}
	return nil
}

// post runs a call that changes something at Stripe, with the idempotency key.
func post[T any](ctx context.Context, c *Client, op, idemKey string, p *stripego.Params, do func() (T, error)) (T, error) {
	var zero T
	if err := checkIdempotencyKey(op, idemKey); err != nil {
		return zero, err
	}
	p.IdempotencyKey = stripego.String(idemKey)
	return call(ctx, c, op, p, do)
}

// call runs a call with the context and classifies its error.
func call[T any](ctx context.Context, c *Client, op string, p *stripego.Params, do func() (T, error)) (T, error) {
	rec := &statusRecord{}
	p.Context = context.WithValue(ctx, statusKey{}, rec)
	v, err := do()
	if err != nil {
		var zero T
		return zero, c.classify(ctx, op, rec.status, err)
	}
	return v, nil
}

type statusKey struct{}

// statusRecord holds the HTTP status of a call's last response. A call runs its
// requests one after another, so it needs no lock.
type statusRecord struct{ status int }

// statusTransport records each response's status in the call's statusRecord:
// stripe-go drops the status of responses that are not Stripe's JSON errors.
type statusTransport struct{ base http.RoundTripper }

func (t statusTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if resp != nil {
		if rec, ok := req.Context().Value(statusKey{}).(*statusRecord); ok {
			rec.status = resp.StatusCode
		}
	}
	return resp, err
}

// slogLogger adapts slog to stripe-go's leveled logger, at debug level throughout.
type slogLogger struct {
	l      *slog.Logger
	redact func(string) string
}

func (s slogLogger) log(format string, v []any) {
	s.l.Log(context.Background(), slog.LevelDebug, s.redact(fmt.Sprintf(format, v...)), slog.String("component", "stripe-go"))
}

func (s slogLogger) Debugf(format string, v ...any) { s.log(format, v) }
func (s slogLogger) Infof(format string, v ...any)  { s.log(format, v) }
func (s slogLogger) Warnf(format string, v ...any)  { s.log(format, v) }
func (s slogLogger) Errorf(format string, v ...any) { s.log(format, v) }
