package api

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/usage"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// Cloud sync (internal/usage), for SDK keys only (the environment comes from the key;
// admin keys get 403), and what operators see of it:
//
//	POST /v1/sdk/usage                              commit a usage batch (gzip or plain JSON wire.UsageBatch)
//	GET  /v1/sdk/stream                             server-sent events (stream.go)
//	GET  /v1/sdk/customers/:id/state                hydrate a customer
//	GET  /v1/environments/:env/usage/unattributed   records that named no customer (admin)
//
// GET /v1/sdk/policy (policies.go) serves the active policy itself.
func (s *Server) syncRoutes(g *echo.Group) {
	g.POST("/sdk/usage", s.postUsage, sdkOnly)
	g.GET("/sdk/stream", s.sdkStream, sdkOnly)
	g.GET("/sdk/customers/:id/state", s.sdkCustomerState, sdkOnly)
	g.GET("/environments/:env/usage/unattributed", s.listUnattributed, adminOnly)
}

// sdkOnly rejects admin keys: these endpoints act for the key's environment.
func sdkOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p := principal(c)
		if p == nil || p.IsAdmin() || p.EnvironmentID == nil {
			return problem.New(http.StatusForbidden, "this endpoint is for SDK keys: create one with POST /v1/keys {\"kind\":\"sdk\",\"environment\":...}")
		}
		return next(c)
	}
}

// sdkEnvironment is the SDK key's environment.
func sdkEnvironment(c echo.Context) store.Environment {
	p := principal(c)
	return environmentOf(p.TenantID, *p.EnvironmentID, p.Environment)
}

// postUsage commits a usage batch: the usage of every customer the environment knows,
// and the records naming customers it does not know as unattributed (listed in the
// acknowledgement). A batch key seen before answers 200 with duplicate=true and
// writes nothing. A structurally invalid batch writes nothing.
func (s *Server) postUsage(c echo.Context) error {
	env := sdkEnvironment(c)
	raw, err := readBatchBody(c.Request(), "usage batch")
	if err != nil {
		s.usageMetrics.Outcome("rejected")
		return err
	}
	in, err := usage.DecodeBatch(raw)
	if err != nil {
		s.usageMetrics.Outcome("rejected")
		return commonProblem(err)
	}
	ack, err := s.usage.Commit(c.Request().Context(), env, in)
	if err != nil {
		err = commonProblem(err)
		var p *problem.Problem
		switch {
		case errors.As(err, &p) && p.Status == http.StatusServiceUnavailable:
			s.usageMetrics.Outcome("unavailable")
		case errors.As(err, &p):
			s.usageMetrics.Outcome("rejected")
		}
		return err
	}
	if ack.Duplicate {
		s.usageMetrics.Outcome("duplicate")
	} else {
		s.usageMetrics.Outcome("committed")
	}
	return c.JSON(http.StatusOK, ack)
}

// readBatchBody reads the body of an SDK batch (what names it in errors), decompressing
// gzip. The compressed size is bounded by the server's body limit (echo's BodyLimit
// middleware), the decompressed size by wire.MaxBatchRaw: both 413.
func readBatchBody(r *http.Request, what string) ([]byte, error) {
	enc := strings.ToLower(strings.TrimSpace(r.Header.Get(echo.HeaderContentEncoding)))
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		var he *echo.HTTPError
		if errors.As(err, &tooLarge) || errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge {
			return nil, problem.New(http.StatusRequestEntityTooLarge, "the "+what+" is larger than the server's body limit: flush smaller batches")
		}
		return nil, problem.New(http.StatusBadRequest, "could not read the request body")
	}
	switch enc {
	case "", "identity":
		if len(body) > wire.MaxBatchRaw {
			return nil, problem.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("the %s is larger than %d bytes", what, wire.MaxBatchRaw))
		}
		return body, nil
	case "gzip", "x-gzip":
		return gunzipBounded(body, wire.MaxBatchRaw, what)
	}
	return nil, problem.New(http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %q is not supported: send gzip or an uncompressed body", enc))
}

// gzipReaders keeps decompressors for reuse: a new one allocates tens of kilobytes of
// tables per batch.
var gzipReaders sync.Pool

// maxGzipRatio bounds how much larger than its input a gzip stream can decompress to
// (deflate's limit is about 1,032:1).
const maxGzipRatio = 1032

// gunzipBounded decompresses body, refusing more than max bytes of output (a gzip
// bomb stops after max+1 bytes).
func gunzipBounded(body []byte, max int64, what string) ([]byte, error) {
	zr, _ := gzipReaders.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(bytes.NewReader(body))
	} else {
		err = zr.Reset(bytes.NewReader(body))
	}
	if err != nil {
		return nil, problem.New(http.StatusBadRequest, "the body is not valid gzip: "+err.Error())
	}
	defer gzipReaders.Put(zr)
	var out bytes.Buffer
	out.Grow(gunzippedSize(body, max) + bytes.MinRead) // ReadFrom wants MinRead free to see the end
	_, err = out.ReadFrom(io.LimitReader(zr, max+1))
	if int64(out.Len()) > max {
		return nil, problem.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("the %s decompresses to more than %d bytes", what, max))
	}
	if err != nil {
		return nil, problem.New(http.StatusBadRequest, "the body is not valid gzip: "+err.Error())
	}
	return out.Bytes(), nil
}

// gunzippedSize is what body says it decompresses to (its trailer's size, of the last
// member), so the output is allocated once rather than grown by doubling. It is only a
// hint: it is capped by max and by what body could decompress to.
func gunzippedSize(body []byte, max int64) int {
	if len(body) < 4 {
		return 0
	}
	n := int64(binary.LittleEndian.Uint32(body[len(body)-4:]))
	return int(min(n, max, int64(len(body))*maxGzipRatio))
}

// sdkCustomerState hydrates a customer: its record, its meters' committed totals and
// its grants' committed draws.
func (s *Server) sdkCustomerState(c echo.Context) error {
	env := sdkEnvironment(c)
	id, err := pathParam(c, "id")
	if err != nil {
		return err
	}
	if validation.ID("id", id) != nil {
		return problem.New(http.StatusNotFound, "no such customer")
	}
	st, err := s.usage.State(c.Request().Context(), env, id)
	if err != nil {
		if errors.Is(err, customers.ErrNotFound) {
			return customerProblem(err)
		}
		return commonProblem(err)
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "private, no-store")
	return c.JSON(http.StatusOK, st)
}

// listUnattributed pages the usage records of an environment that named no customer,
// newest first.
func (s *Server) listUnattributed(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	limit, before, err := idPage(c)
	if err != nil {
		return err
	}
	rs, err := s.usage.Unattributed(c.Request().Context(), env, before, limit+1)
	if err != nil {
		return commonProblem(err)
	}
	return c.JSON(http.StatusOK, pageOf(rs, limit, func(r usage.UnattributedRecord) int64 { return r.ID }))
}
