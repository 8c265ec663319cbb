package limitr

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/wire"
)

// fetchInitialPolicy loads the active policy for Cloud, retrying transient failures a
// few times within ctx.
func (c *cloud) fetchInitialPolicy(ctx context.Context) (*policies.Policy, error) {
	bo := c.newBackoff()
	for attempt := 0; ; attempt++ {
		doc, ver, err := c.getPolicy(ctx, "")
		if err == nil {
			c.version.Store(int64(ver))
			return doc, nil
		}
		var ae *APIError
		if errors.Is(err, ErrNoPolicy) || (errors.As(err, &ae) && ae.Status < 500) || attempt >= 3 || ctx.Err() != nil {
			return nil, err
		}
		if !bo.wait(ctx) {
			return nil, err
		}
	}
}

// getPolicy fetches the active policy; with an ETag it may answer (nil, nil) for "not
// modified". It records the ETag, version number and environment of what it returns.
// Caller holds pmu, except during Cloud (nothing else runs yet).
func (c *cloud) getPolicy(ctx context.Context, etag string) (*policies.Policy, int, error) {
	hdr := http.Header{"Accept": {"application/json"}}
	if etag != "" {
		hdr.Set("If-None-Match", etag)
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.requestLimit)
	defer cancel()
	resp, err := c.request(rctx, http.MethodGet, wire.PathPolicy, nil, hdr)
	if err != nil {
		return nil, 0, fmt.Errorf("limitr: fetching the policy: %w", err)
	}
	defer resp.Body.Close()
	if e := resp.Header.Get(wire.HeaderEnv); e != "" {
		c.env.Store(&e)
	}
	ver, _ := strconv.Atoi(resp.Header.Get(wire.HeaderVer))
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotModified:
		return nil, ver, nil
	case http.StatusNotFound:
		return nil, 0, fmt.Errorf("%w (%w)", ErrNoPolicy, readProblem(resp))
	default:
		return nil, 0, fmt.Errorf("limitr: fetching the policy: %w", readProblem(resp))
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, 0, fmt.Errorf("limitr: fetching the policy: %w", err)
	}
	doc, err := policies.Load(data, doctree.FormatJSON)
	if err != nil {
		return nil, 0, fmt.Errorf("limitr: the published policy does not load: %w", err)
	}
	c.etag = resp.Header.Get("ETag")
	h := strings.Trim(strings.TrimPrefix(c.etag, "W/"), `"`)
	if h == "" {
		h = doc.Hash
	}
	c.serverHash.Store(&h)
	return doc, ver, nil
}

// fetchPolicy polls for a new version and swaps it in; force skips If-None-Match.
func (c *cloud) fetchPolicy(ctx context.Context, force bool) (bool, error) {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	etag := c.etag
	if force {
		etag = ""
	}
	doc, ver, err := c.getPolicy(ctx, etag)
	if err != nil || doc == nil {
		return false, err
	}
	if c.eng.Policy().Hash == doc.Hash {
		c.version.Store(int64(ver)) // the same document republished under a new number
		return false, nil
	}
	if err := c.eng.SetPolicy(doc); err != nil {
		return false, err
	}
	c.version.Store(int64(ver))
	c.policyAt.Store(time.Now().UnixNano())
	c.log.Info("limitr: policy updated", "version", c.version.Load(), "hash", doc.Hash)
	return true, nil
}

// current reports whether hash names the enforced version.
func (c *cloud) current(hash string) bool {
	if hash == "" {
		return true
	}
	if h := c.serverHash.Load(); h != nil && *h == hash {
		return true
	}
	return c.eng.Policy().Hash == hash
}

// syncPolicy fetches a pushed version, retrying a few times; if that fails the poller
// takes over until it succeeds.
func (c *cloud) syncPolicy(ctx context.Context, hash string) {
	bo := c.newBackoff()
	for attempt := 0; attempt < 4; attempt++ {
		_, err := c.fetchPolicy(ctx, false)
		if err == nil && c.current(hash) {
			c.stale.Store(false)
			return
		}
		if err != nil {
			c.log.Warn("limitr: fetching a pushed policy version failed", "err", err)
		}
		if !bo.wait(ctx) {
			break
		}
	}
	c.stale.Store(true)
}

// poll polls the policy with its ETag while the stream is down (or a pushed version
// could not be fetched).
func (c *cloud) poll() {
	defer c.bgWG.Done()
	ctx := c.bgCtx
	t := time.NewTicker(c.cfg.flushInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if c.streamUp.Load() && !c.stale.Load() {
			continue
		}
		if _, err := c.fetchPolicy(ctx, false); err != nil {
			if ctx.Err() == nil {
				c.log.Debug("limitr: policy poll failed", "err", err)
			}
			continue
		}
		c.stale.Store(false)
	}
}

// follow keeps the push stream connected: reconnecting with backoff and jitter, and
// resuming after the last event it handled.
func (c *cloud) follow() {
	defer c.bgWG.Done()
	ctx := c.bgCtx
	bo := c.newBackoff()
	lastID := ""
	for ctx.Err() == nil {
		hello, err := c.stream(ctx, &lastID)
		c.streamUp.Store(false)
		if ctx.Err() != nil {
			return
		}
		if hello {
			bo.reset()
		}
		c.log.Debug("limitr: push stream disconnected; polling until it is back", "err", err)
		if !bo.wait(ctx) {
			return
		}
	}
}

// sseEvent is one server-sent event.
type sseEvent struct {
	id, typ string
	data    strings.Builder
	hasData bool
}

// stream runs one connection of the push stream until it ends. It reports whether the
// server's hello arrived.
func (c *cloud) stream(ctx context.Context, lastID *string) (bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hdr := http.Header{"Accept": {"text/event-stream"}, "Cache-Control": {"no-cache"}}
	if *lastID != "" {
		hdr.Set("Last-Event-ID", *lastID)
	}
	resp, err := c.request(sctx, http.MethodGet, wire.PathStream, nil, hdr)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, readProblem(resp)
	}
	// A stream that goes quiet for longer than the heartbeat allows is presumed dead.
	idle := time.AfterFunc(c.cfg.streamIdle, cancel)
	defer idle.Stop()
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	hello := false
	var ev sseEvent
	for {
		line, err := readLine(r, 16<<20)
		if err != nil {
			return hello, err
		}
		idle.Reset(c.cfg.streamIdle)
		if line == "" {
			if ev.hasData || ev.typ != "" {
				ok, err := c.dispatch(ctx, &ev)
				if err != nil {
					// The event was not applied: end the connection without moving past
					// it, so the server sends it again on the next one. hello is reported
					// false so reconnects back off.
					return false, err
				}
				if ok && ev.typ == wire.EventHello {
					hello = true
				}
			}
			if ev.id != "" {
				*lastID = ev.id
			}
			ev = sseEvent{}
			continue
		}
		if line[0] == ':' {
			continue // comment: heartbeat
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			if !strings.ContainsRune(value, 0) {
				ev.id = value
			}
		case "event":
			ev.typ = value
		case "data":
			if ev.hasData {
				ev.data.WriteByte('\n')
			}
			ev.data.WriteString(value)
			ev.hasData = true
		}
	}
}

func readLine(r *bufio.Reader, limit int) (string, error) {
	var buf []byte
	for {
		chunk, err := r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > limit {
			return "", errors.New("limitr: push stream line too long")
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", err
		}
		s := string(buf)
		s = strings.TrimSuffix(s, "\n")
		return strings.TrimSuffix(s, "\r"), nil
	}
}

// dispatch handles one event; false if it could not be understood. An error means
// the event was understood but could not be applied and must be received again.
func (c *cloud) dispatch(ctx context.Context, ev *sseEvent) (bool, error) {
	data := []byte(ev.data.String())
	switch ev.typ {
	case wire.EventHello:
		var h wire.Hello
		if err := json.Unmarshal(data, &h); err != nil {
			c.log.Warn("limitr: malformed hello on the push stream", "err", err)
			return false, nil
		}
		c.streamUp.Store(true)
		if h.Environment != "" {
			env := h.Environment
			c.env.Store(&env)
		}
		if !c.current(h.PolicyHash) {
			c.syncPolicy(ctx, h.PolicyHash)
		} else if h.PolicyHash != "" && h.PolicyVersion > 0 {
			c.version.Store(int64(h.PolicyVersion))
		}
	case wire.EventPolicy:
		var pc wire.PolicyChanged
		if err := json.Unmarshal(data, &pc); err != nil {
			c.log.Warn("limitr: malformed policy event on the push stream", "err", err)
			return false, nil
		}
		if !c.current(pc.Hash) || pc.Hash == "" {
			c.syncPolicy(ctx, pc.Hash)
		} else if pc.Version > 0 {
			c.version.Store(int64(pc.Version))
		}
	case wire.EventCust:
		var ch wire.CustomerChanged
		if err := json.Unmarshal(data, &ch); err != nil {
			c.log.Warn("limitr: malformed customer event on the push stream", "err", err)
			return false, nil
		}
		c.applyChange(ctx, ch)
	case wire.EventReset:
		var rs wire.Reset
		if err := json.Unmarshal(data, &rs); err != nil {
			// Moving past a reset unapplied would leave changes unseen: reconnect instead.
			return false, fmt.Errorf("limitr: malformed reset on the push stream: %w", err)
		}
		c.log.Info("limitr: the change feed no longer holds this instance's position; re-reading the policy and customers",
			"cursor", rs.Cursor, "reason", rs.Reason)
		if err := c.resync(ctx); err != nil {
			c.log.Warn("limitr: resynchronising after a reset failed; reconnecting to retry", "err", err)
			return false, err
		}
	default:
		return false, nil
	}
	return true, nil
}
