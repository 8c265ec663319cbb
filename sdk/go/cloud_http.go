package limitr

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"strings"
	"time"

	"github.com/limitr/limitr/internal/wire"
)

// The HTTP client side of cloud mode: requests, retries with backoff, API errors.

// APIError is an error answer of the control plane (an RFC 9457 problem). It unwraps to
// the SDK error it means, such as ErrUnknownCustomer, when there is one.
type APIError struct {
	Status int
	Type   string
	Title  string
	Detail string
	Errors []FieldError
	kind   error

	retryAfter time.Duration
}

// FieldError is one invalid field of a request the API refused.
type FieldError struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "limitr: API %d", e.Status)
	if e.Title != "" {
		b.WriteString(" " + e.Title)
	}
	if e.Detail != "" {
		b.WriteString(": " + e.Detail)
	}
	for _, f := range e.Errors {
		fmt.Fprintf(&b, "; %s: %s", f.Path, f.Message)
	}
	return b.String()
}

func (e *APIError) Unwrap() error { return e.kind }

func (e *APIError) field(prefix string) *FieldError {
	for i := range e.Errors {
		if e.Errors[i].Path == prefix || strings.HasPrefix(e.Errors[i].Path, prefix+"[") || strings.HasPrefix(e.Errors[i].Path, prefix+".") {
			return &e.Errors[i]
		}
	}
	return nil
}

func readProblem(resp *http.Response) *APIError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	e := &APIError{Status: resp.StatusCode}
	var pb struct {
		Type   string       `json:"type"`
		Title  string       `json:"title"`
		Detail string       `json:"detail"`
		Errors []FieldError `json:"errors"`
	}
	if json.Unmarshal(body, &pb) == nil {
		e.Type, e.Title, e.Detail, e.Errors = pb.Type, pb.Title, pb.Detail, pb.Errors
	} else if s := strings.TrimSpace(string(body)); s != "" && len(s) < 512 {
		e.Detail = s
	}
	if e.Title == "" {
		e.Title = http.StatusText(resp.StatusCode)
	}
	return e
}

// request sends one request to the API. body is JSON-encoded unless it is []byte.
func (c *cloud) request(ctx context.Context, method, path string, body any, hdr http.Header) (*http.Response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("User-Agent", "limitr-go-sdk")
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	return c.hc.Do(req)
}

// call is request with retries of transient failures (network errors, 502, 503, 504),
// a bounded number of times, reading the whole answer. POSTs carry one Idempotency-Key
// across their retries.
func (c *cloud) call(ctx context.Context, method, path string, body any) (int, []byte, error) {
	hdr := http.Header{}
	if method == http.MethodPost {
		var k [16]byte
		_, _ = rand.Read(k[:])
		hdr.Set("Idempotency-Key", hex.EncodeToString(k[:]))
	}
	bo := c.newBackoff()
	for attempt := 0; ; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, c.cfg.requestLimit)
		resp, err := c.request(rctx, method, path, body, hdr)
		if err == nil {
			switch resp.StatusCode {
			case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
				err = readProblem(resp)
				resp.Body.Close()
			default:
				data, rerr := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
				resp.Body.Close()
				cancel()
				if rerr != nil {
					return 0, nil, rerr
				}
				if resp.StatusCode >= 400 {
					resp.Body = io.NopCloser(bytes.NewReader(data))
					return resp.StatusCode, nil, readProblem(resp)
				}
				return resp.StatusCode, data, nil
			}
		}
		cancel()
		if attempt >= 2 || ctx.Err() != nil {
			return 0, nil, fmt.Errorf("limitr: %s %s: %w", method, path, err)
		}
		if !bo.wait(ctx) {
			return 0, nil, fmt.Errorf("limitr: %s %s: %w", method, path, ctx.Err())
		}
	}
}

// backoff is exponential backoff with jitter: each wait is drawn from [d/2, d], d
// doubling from the base up to the cap.
type backoff struct {
	base, cap, cur time.Duration
}

func (c *cloud) newBackoff() *backoff {
	return &backoff{base: c.cfg.backoffBase, cap: c.cfg.backoffCap, cur: c.cfg.backoffBase}
}

func (b *backoff) next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.cap)
	half := d / 2
	return half + time.Duration(mrand.Int64N(int64(half)+1))
}

func (b *backoff) reset() { b.cur = b.base }

// wait sleeps for the next backoff; false if ctx ended first.
func (b *backoff) wait(ctx context.Context) bool {
	return sleep(ctx, b.next())
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// close stops cloud mode: the stream, poller and cutter stop, remaining usage is cut
// and sent until ctx ends; what could not be sent is spilled (with Spill) or reported.
func (c *cloud) close(ctx context.Context) error {
	if c.unlockSpill != nil {
		// Last, once the queue is sent or spilled.
		defer func() { _ = c.unlockSpill() }()
	}
	c.bgCancel()
	c.bgWG.Wait()
	c.flushEvents() // alongside the usage, within the same deadline
	// Twice: a call that passed the closed check just before Close may commit after
	// the first cut.
	for range 2 {
		c.cut(true)
		c.kick()
		if !c.waitSent(ctx) {
			break
		}
	}
	c.waitEvents(ctx)
	c.sendCancel()
	c.sendWG.Wait()
	c.umu.Lock()
	sent := len(c.queue) == 0
	c.umu.Unlock()
	if sent {
		// Only once every batch is acknowledged: the server counts this instance's
		// usage against its leases before their rest is freed.
		c.leases.giveBack(ctx)
	}
	c.abandonEvents()
	c.umu.Lock()
	defer c.umu.Unlock()
	if len(c.queue) == 0 {
		return nil
	}
	if c.cfg.overflow.kind == overflowSpill {
		var errs []error
		for _, b := range c.queue {
			if b.file == "" {
				if err := c.spillLocked(b); err != nil {
					errs = append(errs, err)
				}
			}
		}
		if len(errs) == 0 {
			c.log.Warn("limitr: usage not sent before Close; spilled for the next start", "records", c.spilledN, "dir", c.cfg.overflow.dir)
			return nil
		}
		return fmt.Errorf("limitr: close: usage could not be spilled: %w", errors.Join(errs...))
	}
	n := 0
	for _, b := range c.queue {
		n += b.n
	}
	return fmt.Errorf("limitr: close: %d usage records were not acknowledged by the server: %w", n, context.Cause(ctx))
}

// waitSent waits until the queue is empty; false if ctx ended first.
func (c *cloud) waitSent(ctx context.Context) bool {
	for {
		c.umu.Lock()
		left := len(c.queue)
		c.umu.Unlock()
		if left == 0 {
			return true
		}
		select {
		case <-c.progress:
		case <-ctx.Done():
			return false
		}
	}
}

func (c *cloud) environment(ctx context.Context) (string, error) {
	if e := c.env.Load(); e != nil && *e != "" {
		return *e, nil
	}
	if _, err := c.fetchPolicy(ctx, true); err != nil {
		return "", err
	}
	if e := c.env.Load(); e != nil && *e != "" {
		return *e, nil
	}
	return "", errors.New("limitr: the API did not say which environment the SDK key belongs to (no " + wire.HeaderEnv + " header)")
}
