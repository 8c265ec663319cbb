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

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/diff"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
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

// changesChannel is where wake-ups for an environment's change feed are published.
func changesChannel(tenantID, envID uuid.UUID) string {
	return "limitr:changes:" + tenantID.String() + ":" + envID.String()
}

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

// policyProblem turns the engine's validation error into a 422 listing every problem.
func policyProblem(err error) error {
	var ve *policies.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	errs := make([]problem.FieldError, 0, len(ve.Problems))
	for _, p := range ve.Problems {
		msg := p.Message
		if p.Line > 0 && !strings.Contains(msg, "line ") {
			msg = fmt.Sprintf("%s (line %d)", msg, p.Line)
		}
		errs = append(errs, problem.FieldError{Path: p.Path, Message: msg})
	}
	detail := "the policy is invalid"
	if len(errs) > 1 {
		detail = fmt.Sprintf("the policy has %d problems", len(errs))
	}
	return problem.Validation(detail, errs).WithType("invalid-policy")
}

// createPolicy stores a new version. If the tenant's newest version already has the
// same hash (the same policy, however it was spelled), nothing is created and that
// version comes back with 200 instead of 201, so a deploy pipeline can POST its policy
// on every run without piling up identical versions.
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
	if f == doctree.FormatUnknown {
		f = doctree.Detect(body)
	}
	doc, err := policies.Parse(body, f)
	if err != nil {
		return policyProblem(err)
	}
	compiled, err := policies.Compile(doc)
	if err != nil {
		return policyProblem(err)
	}
	canonical, err := doctree.Encode(policies.Tree(doc), doctree.FormatJSON)
	if err != nil {
		return fmt.Errorf("api: canonical policy: %w", err)
	}
	if bytes.Contains(canonical, []byte(`\u0000`)) {
		// Postgres cannot store NUL in text or jsonb; no real policy needs one.
		return problem.Validation("the policy is invalid", []problem.FieldError{{Path: "(document)", Message: "strings must not contain NUL characters"}}).WithType("invalid-policy")
	}
	p := principal(c)
	ctx := c.Request().Context()
	var v pgstore.Version
	var created bool
	var pubs []pgstore.Publication
	err = s.store.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		by := p.KeyID
		v, created, err = pgstore.CreateVersionIfChanged(ctx, tx, p.TenantID, f.String(), body, canonical, compiled.Hash, &by)
		if err != nil {
			return err
		}
		if !created {
			m, err := pgstore.PublicationsOfVersions(ctx, tx, p.TenantID, []uuid.UUID{v.ID})
			pubs = m[v.ID]
			return err
		}
		return s.audit(c, tx, nil, "policy.create", "policy", strconv.Itoa(v.Number), nil, v)
	})
	if err != nil {
		return s.unavailable(err)
	}
	if pubs == nil {
		pubs = []pgstore.Publication{}
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/policies/"+strconv.Itoa(v.Number))
	return c.JSON(status, policyVersion{Version: v, Publications: pubs})
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

func noVersion(n int) error {
	return problem.New(http.StatusNotFound, fmt.Sprintf("no policy version %d", n))
}

// version loads the tenant's version named by the :number path parameter.
func (s *Server) version(c echo.Context) (pgstore.Version, error) {
	n, ok := versionNumber(c.Param("number"))
	if !ok {
		return pgstore.Version{}, problem.New(http.StatusNotFound, "no such policy version: versions are numbered 1, 2, 3, ...")
	}
	return s.versionByNumber(c, n)
}

func (s *Server) versionByNumber(c echo.Context, n int) (pgstore.Version, error) {
	v, err := pgstore.VersionByNumber(c.Request().Context(), s.pool, principal(c).TenantID, n)
	if errors.Is(err, pgstore.ErrNotFound) {
		return v, noVersion(n)
	}
	if err != nil {
		return v, s.unavailable(err)
	}
	return v, nil
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
	vs, err := pgstore.ListVersions(c.Request().Context(), s.pool, principal(c).TenantID, before, limit+1)
	if err != nil {
		return s.unavailable(err)
	}
	out := list[pgstore.VersionSummary]{Data: vs}
	if len(vs) > limit {
		out.Data = vs[:limit]
		out.NextCursor = strconv.Itoa(vs[limit-1].Number)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getPolicy(c echo.Context) error {
	v, err := s.version(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	pol, err := s.policyCache.get(v)
	if err != nil {
		return err
	}
	doc, err := pol.Marshal(doctree.FormatJSON)
	if err != nil {
		return err
	}
	pubs, err := pgstore.PublicationsOfVersions(ctx, s.pool, principal(c).TenantID, []uuid.UUID{v.ID})
	if err != nil {
		return s.unavailable(err)
	}
	out := policyVersion{Version: v, Publications: pubs[v.ID], Document: doc}
	if out.Publications == nil {
		out.Publications = []pgstore.Publication{}
	}
	return c.JSON(http.StatusOK, out)
}

// getPolicySource returns the document as uploaded, or re-encoded by the engine in
// ?format= (comments and spelling are then the engine's, not the author's).
func (s *Server) getPolicySource(c echo.Context) error {
	f, reencode, err := queryFormat(c)
	if err != nil {
		return err
	}
	v, err := s.version(c)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set(HeaderPolicyVersion, strconv.Itoa(v.Number))
	if !reencode {
		return c.Blob(http.StatusOK, sourceTypes[v.Format], v.Source)
	}
	pol, err := s.policyCache.get(v)
	if err != nil {
		return err
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

type publishRequest struct {
	Version *int `json:"version"`
}

// publishResponse is the outcome of a publish or rollback. Changed is false when the
// version was already active: nothing was written and Publication is null.
type publishResponse struct {
	Environment     string               `json:"environment"`
	Version         int                  `json:"version"`
	Hash            string               `json:"hash"`
	PreviousVersion *int                 `json:"previous_version"`
	Changed         bool                 `json:"changed"`
	Publication     *pgstore.Publication `json:"publication"`
}

// auditedVersion is the before/after of a publication in the audit log.
type auditedVersion struct {
	Version int    `json:"version"`
	Hash    string `json:"hash"`
}

func (s *Server) publishPolicy(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	var req publishRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	if req.Version == nil || *req.Version < 1 || *req.Version > math.MaxInt32 {
		return problem.Validation("invalid publish request", []problem.FieldError{{Path: "version", Message: "is required: the number of the version to publish"}})
	}
	n := *req.Version
	return s.setActive(c, env, pgstore.ActionPublish, func(tx pgx.Tx) (pgstore.Version, error) {
		return s.versionInTx(c, tx, n)
	})
}

// rollbackPolicy makes an earlier version active again. With {"version": N}, N must
// have been active in this environment before; without a body (or without "version"),
// the target is the most recently published version other than the active one, so
// two rollbacks in a row undo each other.
func (s *Server) rollbackPolicy(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	body, err := readAll(c)
	if err != nil {
		return err
	}
	var req publishRequest
	if len(bytes.TrimSpace(body)) > 0 {
		c.Request().Body = io.NopCloser(bytes.NewReader(body))
		if err := bindJSON(c, &req); err != nil {
			return err
		}
		if req.Version != nil && (*req.Version < 1 || *req.Version > math.MaxInt32) {
			return problem.Validation("invalid rollback request", []problem.FieldError{{Path: "version", Message: "must be a version number (1, 2, 3, ...) or left out"}})
		}
	}
	p := principal(c)
	ctx := c.Request().Context()
	return s.setActive(c, env, pgstore.ActionRollback, func(tx pgx.Tx) (pgstore.Version, error) {
		if _, err := pgstore.LockEnvironment(ctx, tx, p.TenantID, env.ID); err != nil {
			return pgstore.Version{}, err
		}
		if req.Version == nil {
			v, err := pgstore.RollbackTarget(ctx, tx, p.TenantID, env.ID)
			if errors.Is(err, pgstore.ErrNotFound) {
				return v, problem.New(http.StatusConflict, fmt.Sprintf("nothing to roll back to: no other version was ever published to %q", env.Name)).WithType("no-rollback-target")
			}
			return v, err
		}
		v, err := s.versionInTx(c, tx, *req.Version)
		if err != nil {
			return v, err
		}
		was, err := pgstore.WasPublished(ctx, tx, p.TenantID, env.ID, v.ID)
		if err != nil {
			return v, err
		}
		if !was {
			return v, problem.New(http.StatusConflict, fmt.Sprintf("version %d was never published to %q: publish it instead", v.Number, env.Name)).WithType("no-rollback-target")
		}
		return v, nil
	})
}

func (s *Server) versionInTx(c echo.Context, tx pgx.Tx, n int) (pgstore.Version, error) {
	v, err := pgstore.VersionByNumber(c.Request().Context(), tx, principal(c).TenantID, n)
	if errors.Is(err, pgstore.ErrNotFound) {
		return v, noVersion(n)
	}
	return v, err
}

// setActive points an environment at the version target picks, in one transaction with
// the publication record, the change-feed entry SDKs follow and the audit entry; then
// wakes every replica's feed followers.
func (s *Server) setActive(c echo.Context, env store.Environment, action string, target func(tx pgx.Tx) (pgstore.Version, error)) error {
	p := principal(c)
	ctx := c.Request().Context()
	var out publishResponse
	var changeID int64
	err := s.store.InTx(ctx, func(tx pgx.Tx) error {
		v, err := target(tx)
		if err != nil {
			return err
		}
		by := p.KeyID
		res, err := pgstore.Publish(ctx, tx, p.TenantID, env.ID, v, action, &by)
		if err != nil {
			return err
		}
		out = publishResponse{Environment: env.Name, Version: v.Number, Hash: v.Hash, Changed: res.Publication != nil, Publication: res.Publication}
		var before any
		if res.Previous != nil {
			n := res.Previous.Number
			out.PreviousVersion = &n
			before = auditedVersion{Version: res.Previous.Number, Hash: res.Previous.Hash}
		}
		if !out.Changed {
			return nil
		}
		after := auditedVersion{Version: v.Number, Hash: v.Hash}
		if changeID, err = store.AppendChange(ctx, tx, p.TenantID, env.ID, "policy", strconv.Itoa(v.Number), after); err != nil {
			return err
		}
		return s.audit(c, tx, &env.ID, "policy."+action, "environment_policy", env.Name, before, after)
	})
	if errors.Is(err, pgstore.ErrNotFound) {
		return problem.New(http.StatusNotFound, fmt.Sprintf("no environment %q", env.Name))
	}
	if err != nil {
		return s.unavailable(err)
	}
	if out.Changed {
		if err := s.bus.Publish(ctx, changesChannel(p.TenantID, env.ID), []byte(strconv.FormatInt(changeID, 10))); err != nil {
			s.logger.Warn("api: could not publish a change wake-up; followers see it on their next poll", "err", err, "environment", env.Name)
		}
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) listPublications(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	limit, err := page(c)
	if err != nil {
		return err
	}
	var before int64
	if cur := c.QueryParam("cursor"); cur != "" {
		if before, err = strconv.ParseInt(cur, 10, 64); err != nil || before <= 0 {
			return problem.Validation("invalid query", []problem.FieldError{{Path: "cursor", Message: "is not a cursor this API returned"}})
		}
	}
	pubs, err := pgstore.ListPublications(c.Request().Context(), s.pool, principal(c).TenantID, env.ID, before, limit+1)
	if err != nil {
		return s.unavailable(err)
	}
	out := list[pgstore.Publication]{Data: pubs}
	if len(pubs) > limit {
		out.Data = pubs[:limit]
		out.NextCursor = strconv.FormatInt(pubs[limit-1].ID, 10)
	}
	return c.JSON(http.StatusOK, out)
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
	if validID("environment", name) != nil {
		return problem.New(http.StatusNotFound, "no such environment")
	}
	if !p.IsAdmin() && p.Environment != name {
		return problem.New(http.StatusForbidden, fmt.Sprintf("this SDK key is bound to environment %q", p.Environment))
	}
	ctx := c.Request().Context()
	a, err := pgstore.ActiveByEnvironmentName(ctx, s.pool, p.TenantID, name)
	if errors.Is(err, pgstore.ErrNotFound) {
		return problem.New(http.StatusNotFound, fmt.Sprintf("no environment %q", name))
	}
	if err != nil {
		return s.unavailable(err)
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
	pol, v, err := s.activePolicy(ctx, p.TenantID, a.EnvironmentID)
	if errors.Is(err, errNoActivePolicy) {
		return problem.New(http.StatusNotFound, fmt.Sprintf("no policy is published to environment %q yet", name)).WithType("no-active-policy")
	}
	if err != nil {
		return s.unavailable(err)
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

// diffResponse is a diff.Diff (its sections at the top level) with the two versions.
type diffResponse struct {
	From versionRef `json:"from"`
	To   versionRef `json:"to"`
	// Empty is true when nothing the engine reads differs (the hashes may still
	// differ, for example when only the spelling of a number changed).
	Empty bool `json:"empty"`
	*diff.Diff
}

type versionRef struct {
	Number int    `json:"number"`
	Hash   string `json:"hash"`
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
	var docs [2]*policies.Document
	var refs [2]versionRef
	for i, n := range nums {
		v, err := s.versionByNumber(c, n)
		if err != nil {
			return err
		}
		pol, err := s.policyCache.get(v)
		if err != nil {
			return err
		}
		docs[i], refs[i] = pol.Doc, versionRef{Number: v.Number, Hash: v.Hash}
	}
	d := diff.Documents(docs[0], docs[1])
	return c.JSON(http.StatusOK, diffResponse{From: refs[0], To: refs[1], Empty: d.Empty(), Diff: d})
}
