package channels

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const secretPrefix = "whsec_"

// Webhook POSTs the Message as JSON, signed like Standard Webhooks.
type Webhook struct {
	URL        string
	Secrets    []string // "whsec_<base64>"; two during a rotation, both sign
	HTTPClient *http.Client
	Now        func() time.Time
}

// Validate checks the webhook's input, naming the bad field.
func (w Webhook) Validate() error {
	if w.URL == "" {
		return fieldError("webhook.url", "is required")
	}
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fieldError("webhook.url", "must be an http(s) URL")
	}
	if len(w.Secrets) == 0 {
		return fieldError("webhook.secrets", "at least one secret is required")
	}
	for i, s := range w.Secrets {
		if _, err := decodeSecret(s); err != nil {
			return fieldError(fmt.Sprintf("webhook.secrets[%d]", i), err.Error())
		}
	}
	return nil
}

func decodeSecret(secret string) ([]byte, error) {
	if !strings.HasPrefix(secret, secretPrefix) {
		return nil, errors.New("must start with " + secretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, secretPrefix))
	if err != nil || len(key) == 0 {
		return nil, errors.New("must be " + secretPrefix + " followed by base64")
	}
	return key, nil
}

// Sign returns the Standard Webhooks signature "v1,<base64 HMAC-SHA256>" of
// "id.timestamp.body" under secret ("whsec_<base64>").
func Sign(secret, id string, ts time.Time, body []byte) (string, error) {
	key, err := decodeSecret(secret)
	if err != nil {
		return "", fmt.Errorf("webhook secret: %w", err)
	}
	return "v1," + base64.StdEncoding.EncodeToString(mac(key, id, strconv.FormatInt(ts.Unix(), 10), body)), nil
}

func mac(key []byte, id, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Errors of Verify.
var (
	ErrNoMatchingSignature = errors.New("webhook: no matching signature")
	ErrTimestamp           = errors.New("webhook: timestamp outside tolerance")
)

// Verify checks a Standard Webhooks delivery: ts is the webhook-timestamp
// header (unix seconds), sigHeader the webhook-signature header (space
// separated "v1,<b64>" entries). Any secret matching any signature passes.
func Verify(secrets []string, id, ts, sigHeader string, body []byte, now time.Time, tolerance time.Duration) error {
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: malformed", ErrTimestamp)
	}
	at := time.Unix(sec, 0)
	if d := now.Sub(at); d > tolerance || d < -tolerance {
		return ErrTimestamp
	}
	var sigs [][]byte
	for _, part := range strings.Fields(sigHeader) {
		v, b64, ok := strings.Cut(part, ",")
		if !ok || v != "v1" {
			continue
		}
		if raw, err := base64.StdEncoding.DecodeString(b64); err == nil {
			sigs = append(sigs, raw)
		}
	}
	for _, s := range secrets {
		key, err := decodeSecret(s)
		if err != nil {
			continue
		}
		want := mac(key, id, ts, body)
		for _, got := range sigs {
			if hmac.Equal(want, got) {
				return nil
			}
		}
	}
	return ErrNoMatchingSignature
}

// Send POSTs m as JSON with webhook-id, webhook-timestamp and webhook-signature.
func (w Webhook) Send(ctx context.Context, m Message) error {
	if err := w.Validate(); err != nil {
		return err
	}
	if err := m.Validate(); err != nil {
		return err
	}
	body, err := json.Marshal(m)
	if err != nil {
		return permanent("webhook", err)
	}
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	ts := now()
	sigs := make([]string, 0, len(w.Secrets))
	for _, s := range w.Secrets {
		sig, err := Sign(s, m.DeliveryID, ts, body)
		if err != nil {
			return permanent("webhook", err)
		}
		sigs = append(sigs, sig)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return permanent("webhook", errors.New("invalid url"))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", m.DeliveryID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set("webhook-signature", strings.Join(sigs, " "))
	client := w.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := client.Do(req)
	if err != nil {
		if refused := refusedDestination("webhook", err); refused != nil {
			return refused
		}
		return &DeliveryError{Channel: "webhook", Retryable: true, Err: scrub(err, w.Secrets...)}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	return &DeliveryError{
		Channel:    "webhook",
		Status:     resp.StatusCode,
		RetryAfter: retryAfter(resp.Header.Get("Retry-After"), ts),
		Retryable:  retryableStatus(resp.StatusCode),
		Err:        fmt.Errorf("receiver answered %s", resp.Status),
	}
}

func retryableStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}

// retryAfter parses a Retry-After header: delta seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
