package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

// Stream tunables.
const (
	// streamPage is how many feed entries one read of the change feed takes.
	streamPage = 500

	defaultStreamHeartbeat = 15 * time.Second
	defaultStreamPoll      = 5 * time.Second
)

// setStreamTimings sets the stream's heartbeat and safety-poll intervals (tests).
func (s *Server) setStreamTimings(heartbeat, poll time.Duration) {
	if heartbeat > 0 {
		s.streamHeartbeat.Store(int64(heartbeat))
	}
	if poll > 0 {
		s.streamPoll.Store(int64(poll))
	}
}

// sdkStream is the push stream. It subscribes to the environment's wake-ups first,
// then reads where the feed stands and the active version, so nothing committed after
// the hello can be missed: every change after the resume point is sent, in id order,
// on a wake-up or on the safety poll, whichever comes first.
//
// With Last-Event-ID (or ?cursor=), the changes after it are replayed right after the
// hello, and the hello carries that id, so a connection lost during the replay
// resumes from where it was. Without one, the hello's id is the feed's newest id. A
// resume point older than what the feed still holds (retention removed entries after
// it) is answered with a reset event: the client resynchronises and continues from
// the reset's id.
func (s *Server) sdkStream(c echo.Context) error {
	env := sdkEnvironment(c)
	after, resume, err := streamCursor(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel) // Close ends every stream
	defer stop()
	wake, leave := s.hub.Listen(wire.ChangesChannel(env.TenantID.String(), env.ID.String()))
	defer leave()

	latest, err := store.LatestChangeID(ctx, s.pool, env.TenantID, env.ID)
	if err != nil {
		return commonProblem(err)
	}
	horizon, err := store.ChangeFeedHorizon(ctx, s.pool, env.TenantID, env.ID)
	if err != nil {
		return commonProblem(err)
	}
	hello := wire.Hello{Environment: env.Name, Cursor: latest}
	v, err := s.policies.ActiveRef(ctx, env)
	switch {
	case err == nil:
		hello.PolicyVersion, hello.PolicyHash = v.Number, v.Hash
	case errors.Is(err, pgstore.ErrNoActivePolicy):
	default:
		return commonProblem(err)
	}
	if !resume || after > latest {
		after = latest
	}

	res := c.Response()
	h := res.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no")
	rc := http.NewResponseController(res.Writer)
	// A stream outlives the server's read and write timeouts, which bound ordinary
	// requests: clear both for this connection.
	_ = rc.SetWriteDeadline(time.Time{})
	_ = rc.SetReadDeadline(time.Time{})
	res.WriteHeader(http.StatusOK)
	s.streams.Inc()
	defer s.streams.Dec()

	sw := &sseWriter{w: res, rc: rc}
	data, _ := json.Marshal(hello)
	if err := sw.event(after, wire.EventHello, data); err != nil {
		return nil
	}
	if resume && after < horizon {
		data, _ := json.Marshal(wire.Reset{Cursor: horizon,
			Reason: "the changes after your cursor are no longer kept: re-read the policy and your customers"})
		if err := sw.event(horizon, wire.EventReset, data); err != nil {
			return nil
		}
		after = horizon
	}
	last := after
	// catchUp sends every change after last; it reports only write failures (the
	// client is gone). A database failure is logged and retried on the next tick.
	catchUp := func() error {
		for {
			cs, err := store.ChangesSince(ctx, s.pool, env.TenantID, env.ID, last, streamPage)
			if err != nil {
				if ctx.Err() == nil {
					s.logger.Warn("api: stream could not read the change feed; retrying on the next poll", "err", err, "environment", env.Name)
				}
				return nil
			}
			for _, ch := range cs {
				name, data, ok := changeEvent(ch)
				if ok {
					if err := sw.event(ch.ID, name, data); err != nil {
						return err
					}
				}
				last = ch.ID
			}
			if len(cs) < streamPage {
				return nil
			}
		}
	}
	if err := catchUp(); err != nil {
		return nil
	}
	hb := time.NewTicker(time.Duration(s.streamHeartbeat.Load()))
	defer hb.Stop()
	poll := time.NewTicker(time.Duration(s.streamPoll.Load()))
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-poll.C:
		case <-hb.C:
			if err := sw.comment("ping"); err != nil {
				return nil
			}
			continue
		}
		if err := catchUp(); err != nil {
			return nil
		}
	}
}

// streamCursor reads the resume point: Last-Event-ID, else ?cursor=.
func streamCursor(c echo.Context) (int64, bool, error) {
	v := strings.TrimSpace(c.Request().Header.Get("Last-Event-ID"))
	field := "Last-Event-ID"
	if v == "" {
		v, field = c.QueryParam("cursor"), "cursor"
	}
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false, problem.Validation("invalid stream cursor", []problem.FieldError{{Path: field, Message: "must be an event id this stream sent (a whole number, 0 or more)"}})
	}
	return n, true, nil
}

// changeEvent maps a change-feed entry to its stream event. Policy entries carry
// {version, hash}; customer entries a wire.CustomerChanged, with the customer id as
// the subject.
func changeEvent(ch store.Change) (string, []byte, bool) {
	switch ch.Kind {
	case "policy":
		var p wire.PolicyChanged
		if err := json.Unmarshal(ch.Payload, &p); err != nil {
			return "", nil, false
		}
		if p.Version == 0 {
			p.Version, _ = strconv.Atoi(ch.Subject)
		}
		b, err := json.Marshal(p)
		return wire.EventPolicy, b, err == nil
	case "customer":
		var cc wire.CustomerChanged
		if err := json.Unmarshal(ch.Payload, &cc); err != nil {
			return "", nil, false
		}
		cc.ID = ch.Subject
		b, err := json.Marshal(cc)
		return wire.EventCust, b, err == nil
	}
	return "", nil, false
}

// sseWriter writes server-sent events and flushes each one.
type sseWriter struct {
	w   *echo.Response
	rc  *http.ResponseController
	buf bytes.Buffer
}

func (w *sseWriter) event(id int64, name string, data []byte) error {
	w.buf.Reset()
	w.buf.WriteString("id: ")
	w.buf.WriteString(strconv.FormatInt(id, 10))
	w.buf.WriteString("\nevent: ")
	w.buf.WriteString(name)
	w.buf.WriteString("\ndata: ")
	w.buf.Write(data) // compact JSON: no newlines
	w.buf.WriteString("\n\n")
	return w.flush()
}

func (w *sseWriter) comment(text string) error {
	w.buf.Reset()
	w.buf.WriteString(": ")
	w.buf.WriteString(text)
	w.buf.WriteString("\n\n")
	return w.flush()
}

func (w *sseWriter) flush() error {
	if _, err := w.w.Write(w.buf.Bytes()); err != nil {
		return err
	}
	return w.rc.Flush()
}
