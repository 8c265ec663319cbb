package problem

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/httpx/requestlog"
)

// handledKey marks an echo.Context whose error has already been rendered (or
// logged): middleware such as requestlog call c.Error to learn the final
// status and then still return the error up the chain, as echo's own
// middleware does, so the handler runs more than once for one request.
const handledKey = "limitr.problem.handled"

// genericDetail is all a client learns about an unexpected error.
const genericDetail = "An unexpected error occurred. If it persists, contact support and quote the request id."

// ErrorHandler returns an echo.HTTPErrorHandler that writes every error as an
// application/problem+json response:
//
//   - a *Problem anywhere in the error chain is sent as is (plus request id
//     and instance);
//   - an *echo.HTTPError (unknown route, wrong method, body too large, bind
//     errors) keeps its status; for 4xx its message becomes the detail;
//   - context.Canceled (the client went away) is recorded as 499 and not
//     logged as an error; context.DeadlineExceeded becomes a 503;
//   - anything else is a 500 with a generic detail; the error itself is
//     logged with the request id and never sent to the client.
//
// Retry-After is set when the problem has a positive RetryAfter. HEAD
// requests get the status and headers without a body. If the response was
// already committed, the error is only logged.
func ErrorHandler(logger *slog.Logger) echo.HTTPErrorHandler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(err error, c echo.Context) {
		if err == nil || c.Get(handledKey) != nil {
			return
		}
		c.Set(handledKey, true)

		req := c.Request()
		ctx := req.Context()
		rid := requestlog.RequestID(ctx)
		logAttrs := func(level slog.Level, msg string) {
			logger.LogAttrs(ctx, level, msg,
				slog.String("request_id", rid),
				slog.String("method", req.Method),
				slog.String("route", c.Path()),
				slog.String("error", err.Error()),
			)
		}

		if c.Response().Committed {
			if !errors.Is(err, context.Canceled) {
				logAttrs(slog.LevelError, "error after response was committed")
			}
			return
		}

		p, unexpected := fromError(err)
		switch {
		case unexpected:
			logAttrs(slog.LevelError, "unhandled error")
		case p.Status >= 500:
			logAttrs(slog.LevelWarn, "server error")
		}
		p.RequestID = rid
		if p.Instance == "" {
			p.Instance = req.URL.Path
		}
		if werr := write(c, p); werr != nil && !errors.Is(werr, context.Canceled) {
			logger.LogAttrs(ctx, slog.LevelWarn, "writing problem response failed",
				slog.String("request_id", rid), slog.String("error", werr.Error()))
		}
	}
}

// RetryAfterSeconds converts d to the whole seconds of a Retry-After header:
// rounded up, and at least 1.
func RetryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	if s < 1 {
		return 1
	}
	return s
}

// fromError maps err to a fresh *Problem the caller may modify. unexpected
// reports that err is not a deliberate client-facing error, so it must be
// logged and hidden.
func fromError(err error) (p *Problem, unexpected bool) {
	var prob *Problem
	if errors.As(err, &prob) {
		cp := *prob
		if cp.Status < 100 || cp.Status > 999 {
			cp.Status = http.StatusInternalServerError
		}
		if cp.Type == "" {
			cp.Type = "about:blank"
		}
		if cp.Title == "" {
			cp.Title = title(cp.Status)
		}
		return &cp, false
	}

	var he *echo.HTTPError
	if errors.As(err, &he) {
		if inner, ok := he.Internal.(*echo.HTTPError); ok {
			he = inner
		}
		return fromHTTPError(he)
	}

	switch {
	case errors.Is(err, context.Canceled):
		return New(StatusClientClosedRequest, "The client closed the request before it completed."), false
	case errors.Is(err, context.DeadlineExceeded):
		p := New(http.StatusServiceUnavailable, "The request took too long to process; retry later.")
		p.RetryAfter = time.Second
		return p, false
	}
	return New(http.StatusInternalServerError, genericDetail), true
}

func fromHTTPError(he *echo.HTTPError) (*Problem, bool) {
	status := he.Code
	if status < 100 || status > 999 {
		status = http.StatusInternalServerError
	}
	if status >= 500 {
		return New(status, genericDetail), true
	}
	detail := ""
	switch m := he.Message.(type) {
	case string:
		detail = m
	case error:
		detail = m.Error()
	case nil:
	default:
		detail = fmt.Sprint(m)
	}
	if detail == "" || detail == http.StatusText(status) {
		detail = defaultDetail(status)
	}
	return New(status, detail), false
}

func defaultDetail(status int) string {
	switch status {
	case http.StatusNotFound:
		return "No resource exists at this URL."
	case http.StatusMethodNotAllowed:
		return "This resource does not support the request method."
	case http.StatusRequestEntityTooLarge:
		return "The request body is too large."
	case http.StatusBadRequest:
		return "The request is malformed."
	case http.StatusUnauthorized:
		return "Missing or invalid API key."
	case http.StatusForbidden:
		return "This API key may not perform this operation."
	case http.StatusUnsupportedMediaType:
		return "The request content type is not supported."
	}
	return ""
}

func write(c echo.Context, p *Problem) error {
	res := c.Response()
	h := res.Header()
	// Headers a failed handler may have set for the response it did not send.
	for _, k := range []string{"Content-Length", "Content-Encoding", "ETag", "Last-Modified", "Location"} {
		h.Del(k)
	}
	h.Set(echo.HeaderContentType, ContentType)
	if p.RetryAfter > 0 {
		h.Set(echo.HeaderRetryAfter, strconv.Itoa(RetryAfterSeconds(p.RetryAfter)))
	}
	if c.Request().Method == http.MethodHead {
		res.WriteHeader(p.Status)
		return nil
	}
	body, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("problem: encode: %w", err)
	}
	body = append(body, '\n')
	h.Set("Content-Length", strconv.Itoa(len(body)))
	res.WriteHeader(p.Status)
	if _, err := res.Write(body); err != nil {
		return fmt.Errorf("problem: write: %w", err)
	}
	return nil
}
