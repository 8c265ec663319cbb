package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// Policy endpoints.
//
//	POST /v1/policies                          create a version (admin)
//	GET  /v1/policies                          list versions, newest first (admin)
//	GET  /v1/policies/diff?from=N&to=M         structural diff of two versions (admin)
//	GET  /v1/policies/:number                  one version with its canonical document (admin)
//	GET  /v1/policies/:number/source           the source as uploaded, or ?format= re-encoded (admin)
//	POST /v1/environments/:env/publish         make a version active (admin)
//	POST /v1/environments/:env/rollback        go back to an earlier version (admin)
//	GET  /v1/environments/:env/policy          the active policy, ETag = version hash (admin or the env's SDK key)
//	GET  /v1/environments/:env/publications    publication history (admin)
//	GET  /v1/sdk/policy                        the active policy of the SDK key's environment (SDK key)
func (s *Server) policyRoutes(g *echo.Group) {
	g.POST("/policies", s.createPolicy, adminOnly)
	g.GET("/policies", s.listPolicies, adminOnly)
	g.GET("/policies/diff", s.diffPolicies, adminOnly)
	g.GET("/policies/:number", s.getPolicy, adminOnly)
	g.GET("/policies/:number/source", s.getPolicySource, adminOnly)
	g.POST("/environments/:env/publish", s.publishPolicy, adminOnly)
	g.POST("/environments/:env/rollback", s.rollbackPolicy, adminOnly)
	g.GET("/environments/:env/policy", s.getActivePolicy)
	g.GET("/environments/:env/publications", s.listPublications, adminOnly)
	g.GET("/sdk/policy", s.getSDKPolicy)
}

// HeaderPolicyVersion carries the active policy's version number next to its ETag.
const HeaderPolicyVersion = "Limitr-Policy-Version"

// policyVersion is the JSON of a version: its metadata, where it was published and,
// for a single version, its canonical document.
type policyVersion struct {
	pgstore.Version
	Publications []pgstore.Publication `json:"publications"`
	Document     json.RawMessage       `json:"document,omitempty"`
}

// mediaTypes maps request Content-Types to document formats; FormatUnknown means
// "detect from the bytes" (curl's default form type and generic binary/text types).
var mediaTypes = map[string]doctree.Format{
	"application/json":                  doctree.FormatJSON,
	"text/json":                         doctree.FormatJSON,
	"application/yaml":                  doctree.FormatYAML,
	"application/x-yaml":                doctree.FormatYAML,
	"text/yaml":                         doctree.FormatYAML,
	"text/x-yaml":                       doctree.FormatYAML,
	"application/toml":                  doctree.FormatTOML,
	"application/x-toml":                doctree.FormatTOML,
	"text/toml":                         doctree.FormatTOML,
	"text/plain":                        doctree.FormatUnknown,
	"application/octet-stream":          doctree.FormatUnknown,
	"application/x-www-form-urlencoded": doctree.FormatUnknown,
}

// sourceTypes is the Content-Type a stored document is served with.
var sourceTypes = map[string]string{
	"json": "application/json",
	"yaml": "application/yaml",
	"toml": "application/toml",
}

// queryFormat reads ?format=; ok is false when absent.
func queryFormat(c echo.Context) (doctree.Format, bool, error) {
	q := c.QueryParam("format")
	if q == "" {
		return doctree.FormatUnknown, false, nil
	}
	f, err := doctree.ParseFormat(q)
	if err != nil || len(q) > 8 {
		return 0, false, problem.Validation("invalid query", []problem.FieldError{{Path: "format", Message: "must be json, yaml or toml"}})
	}
	return f, true, nil
}

// requestFormat picks the body's format: ?format= first, then Content-Type, else
// FormatUnknown (detect).
func requestFormat(c echo.Context) (doctree.Format, error) {
	if f, ok, err := queryFormat(c); ok || err != nil {
		return f, err
	}
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if ct == "" {
		return doctree.FormatUnknown, nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return 0, problem.New(http.StatusUnsupportedMediaType, "the Content-Type header is malformed")
	}
	if f, ok := mediaTypes[mt]; ok {
		return f, nil
	}
	if strings.HasSuffix(mt, "+json") {
		return doctree.FormatJSON, nil
	}
	if strings.HasSuffix(mt, "+yaml") {
		return doctree.FormatYAML, nil
	}
	return 0, problem.New(http.StatusUnsupportedMediaType,
		"send the policy as application/json, application/yaml or application/toml, or name its format with ?format=")
}

// createPolicy stores a new version. If the tenant's newest version already has the
// same hash, nothing is created and that version comes back with 200 instead of 201.
func (s *Server) createPolicy(c echo.Context) error {
	f, err := requestFormat(c)
	if err != nil {
		return err
	}
	body, err := readAll(c)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return problem.New(http.StatusBadRequest, "request body is empty: send a policy document (JSON, YAML or TOML)")
	}
	out, err := s.policies.Create(c.Request().Context(), principal(c).TenantID, pgstore.CreateInput{Format: f, Source: body})
	if err != nil {
		return policyProblem(err)
	}
	status := http.StatusOK
	if out.IsNew {
		status = http.StatusCreated
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/policies/"+strconv.Itoa(out.Version.Number))
	return c.JSON(status, policyVersion{Version: out.Version, Publications: out.Publications})
}

// versionNumber parses a version number from a path or query: a positive int32.
func versionNumber(s string) (int, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > math.MaxInt32 {
		return 0, false
	}
	return n, true
}

// pathVersion reads the :number path parameter.
func pathVersion(c echo.Context) (int, error) {
	n, ok := versionNumber(c.Param("number"))
	if !ok {
		return 0, problem.New(http.StatusNotFound, "no such policy version: versions are numbered 1, 2, 3, ...")
	}
	return n, nil
}

func (s *Server) listPolicies(c echo.Context) error {
	limit, err := page(c)
	if err != nil {
		return err
	}
	before := 0
	if cur := c.QueryParam("cursor"); cur != "" {
		n, ok := versionNumber(cur)
		if !ok {
			return problem.Validation("invalid query", []problem.FieldError{{Path: "cursor", Message: "is not a cursor this API returned"}})
		}
		before = n
	}
	vs, err := s.policies.List(c.Request().Context(), principal(c).TenantID, before, limit+1)
	if err != nil {
		return policyProblem(err)
	}
	out := list[pgstore.VersionSummary]{Data: vs}
	if len(vs) > limit {
		out.Data = vs[:limit]
		out.NextCursor = strconv.Itoa(vs[limit-1].Number)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getPolicy(c echo.Context) error {
	n, err := pathVersion(c)
	if err != nil {
		return err
	}
	v, pol, pubs, err := s.policies.Get(c.Request().Context(), principal(c).TenantID, n)
	if err != nil {
		return policyProblem(err)
	}
	doc, err := pol.Marshal(doctree.FormatJSON)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, policyVersion{Version: v, Publications: pubs, Document: doc})
}

// getPolicySource returns the document as uploaded, or re-encoded by the engine in
// ?format= (comments and spelling are then the engine's, not the author's).
func (s *Server) getPolicySource(c echo.Context) error {
	f, reencode, err := queryFormat(c)
	if err != nil {
		return err
	}
	n, err := pathVersion(c)
	if err != nil {
		return err
	}
	v, pol, err := s.policies.Source(c.Request().Context(), principal(c).TenantID, n)
	if err != nil {
		return policyProblem(err)
	}
	h := c.Response().Header()
	h.Set(HeaderPolicyVersion, strconv.Itoa(v.Number))
	if !reencode {
		return c.Blob(http.StatusOK, sourceTypes[v.Format], v.Source)
	}
	out, err := pol.Marshal(f)
	if err != nil {
		if errors.Is(err, doctree.ErrUnsupported) {
			return problem.Validation("the policy cannot be written in this format", []problem.FieldError{{Path: "format", Message: err.Error()}})
		}
		return err
	}
	return c.Blob(http.StatusOK, sourceTypes[f.String()], out)
}

func (s *Server) publishPolicy(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	var in publishRequest
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	if in.DryRun {
		return s.dryRunPublish(c, env, in.PublishInput)
	}
	out, err := s.policies.Publish(c.Request().Context(), env, in.PublishInput)
	if err != nil {
		return policyProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

// rollbackPolicy makes an earlier version active again; the body (with "version") is
// optional.
func (s *Server) rollbackPolicy(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	body, err := readAll(c)
	if err != nil {
		return err
	}
	var in pgstore.RollbackInput
	if len(bytes.TrimSpace(body)) > 0 {
		c.Request().Body = io.NopCloser(bytes.NewReader(body))
		if err := bindJSON(c, &in); err != nil {
			return err
		}
	}
	out, err := s.policies.Rollback(c.Request().Context(), env, in)
	if err != nil {
		return policyProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) listPublications(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	limit, before, err := idPage(c)
	if err != nil {
		return err
	}
	pubs, err := s.policies.Publications(c.Request().Context(), env, before, limit+1)
	if err != nil {
		return policyProblem(err)
	}
	return c.JSON(http.StatusOK, pageOf(pubs, limit, func(p pgstore.Publication) int64 { return p.ID }))
}

func (s *Server) getActivePolicy(c echo.Context) error {
	return s.serveActivePolicy(c, c.Param("env"))
}

func (s *Server) getSDKPolicy(c echo.Context) error {
	p := principal(c)
	if p.IsAdmin() {
		return problem.New(http.StatusForbidden, "this endpoint is for SDK keys; with an admin key use GET /v1/environments/{env}/policy")
	}
	return s.serveActivePolicy(c, p.Environment)
}

// serveActivePolicy is the SDK's poll path. A conditional request whose ETag matches is
// answered from one indexed query (environment name → active version hash) without
// loading the document; nothing about the active version is cached in the process, so
// every replica answers with what Postgres says now. Only the immutable compiled
// version is cached, by hash.
func (s *Server) serveActivePolicy(c echo.Context, name string) error {
	p := principal(c)
	if validation.ID("environment", name) != nil {
		return problem.New(http.StatusNotFound, "no such environment")
	}
	if !p.IsAdmin() && p.Environment != name {
		return problem.New(http.StatusForbidden, fmt.Sprintf("this SDK key is bound to environment %q", p.Environment))
	}
	ctx := c.Request().Context()
	a, err := s.policies.ActiveByName(ctx, p.TenantID, name)
	if errors.Is(err, pgstore.ErrNotFound) {
		return problem.New(http.StatusNotFound, fmt.Sprintf("no environment %q", name))
	}
	if err != nil {
		return commonProblem(err)
	}
	if a.VersionID == nil {
		return problem.New(http.StatusNotFound, fmt.Sprintf("no policy is published to environment %q yet", name)).WithType("no-active-policy")
	}
	h := c.Response().Header()
	h.Set(echo.HeaderCacheControl, "private, no-cache")
	h.Set(wire.HeaderEnv, name)
	if inm := c.Request().Header.Get("If-None-Match"); inm != "" && etagMatches(inm, a.Hash) {
		h.Set("ETag", strconv.Quote(a.Hash))
		h.Set(HeaderPolicyVersion, strconv.Itoa(a.Number))
		return c.NoContent(http.StatusNotModified)
	}
	pol, v, err := s.policies.Active(ctx, environmentOf(p.TenantID, a.EnvironmentID, name))
	if errors.Is(err, pgstore.ErrNoActivePolicy) {
		return problem.New(http.StatusNotFound, fmt.Sprintf("no policy is published to environment %q yet", name)).WithType("no-active-policy")
	}
	if err != nil {
		return commonProblem(err)
	}
	body, err := pol.Marshal(doctree.FormatJSON)
	if err != nil {
		return err
	}
	h.Set("ETag", strconv.Quote(v.Hash))
	h.Set(HeaderPolicyVersion, strconv.Itoa(v.Number))
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, body)
}

// etagMatches applies If-None-Match's weak comparison: "*" or any listed tag, W/ or
// not, whose opaque part is the hash.
func etagMatches(header, hash string) bool {
	for _, tag := range strings.Split(header, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" {
			return true
		}
		tag = strings.TrimPrefix(tag, "W/")
		if strings.Trim(tag, `"`) == hash && hash != "" {
			return true
		}
	}
	return false
}

func (s *Server) diffPolicies(c echo.Context) error {
	var errs []problem.FieldError
	nums := [2]int{}
	for i, k := range []string{"from", "to"} {
		n, ok := versionNumber(c.QueryParam(k))
		if !ok {
			errs = append(errs, problem.FieldError{Path: k, Message: "is required: a version number (1, 2, 3, ...)"})
		}
		nums[i] = n
	}
	if len(errs) > 0 {
		return problem.Validation("invalid query", errs)
	}
	out, err := s.policies.Diff(c.Request().Context(), principal(c).TenantID, nums[0], nums[1])
	if err != nil {
		return policyProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}
