package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/analytics/replay"
	"github.com/limitr/limitr/internal/analytics/simulate"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/users"
	"github.com/limitr/limitr/internal/validation"
)

// policyRoutes registers the pages of the policies section. Policies: versions, the document editor, the diff, the what-if result, publish and rollback.
func (s *Server) policyRoutes(e *echo.Echo, in permitted) {
	e.GET("/policies", s.policiesPage, in(users.PermView)...)
	e.GET("/policies/new", s.policyEditor, in(users.PermEditPolicy)...)
	e.POST("/policies/new", s.savePolicy, in(users.PermEditPolicy)...)
	e.GET("/policies/:n", s.policyPage, in(users.PermView)...)
	e.POST("/policies/:n/publish", s.publishPolicy, in(users.PermPublishPolicy)...)
	e.POST("/policies/:n/rollback", s.rollbackPolicy, in(users.PermPublishPolicy)...)
	e.POST("/policies/:n/simulations", s.simulatePolicy, in(users.PermEditPolicy)...)
	e.GET("/policies/:n/simulations/:id", s.simulationPage, in(users.PermView)...)
}

// policyNotices are the confirmations a redirect to a version page may show.
var policyNotices = map[string]string{
	"created":    "Saved as a new version. Below: what it changes against the active version.",
	"unchanged":  "Nothing changed: this is the same policy as the newest version, so no new version was made.",
	"published":  "Published. Connected SDKs switch to this version within seconds.",
	"rolledback": "Rolled back. Connected SDKs switch to this version within seconds.",
	"active":     "This version was already active: nothing changed.",
}

// policyPageSize is how many versions the list shows at once.
const policyPageSize = 50

// versionParam reads the :n path parameter: a version number.
func versionParam(c echo.Context) (int, error) {
	p := c.Param("n")
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || len(p) > 10 || n > 1<<31-1 {
		return 0, echo.NewHTTPError(http.StatusNotFound, "There is no such policy version.")
	}
	return n, nil
}

// policyError maps the policy domain's errors that a page shows as such.
func policyError(err error) error {
	var vnf *pgstore.VersionNotFoundError
	switch {
	case errors.As(err, &vnf):
		return echo.NewHTTPError(http.StatusNotFound, "There is no policy version "+strconv.Itoa(vnf.Number)+".")
	case errors.Is(err, pgstore.ErrNotFound):
		return echo.NewHTTPError(http.StatusNotFound, "There is no such policy version.")
	}
	return err
}

// activeRef is the environment's active version, ok false when none is published.
func (s *Server) activeRef(c echo.Context, env store.Environment) (pgstore.VersionRef, bool, error) {
	ref, err := s.deps.Policies.ActiveRef(c.Request().Context(), env)
	if errors.Is(err, pgstore.ErrNoActivePolicy) || errors.Is(err, pgstore.ErrNotFound) {
		return pgstore.VersionRef{}, false, nil
	}
	return ref, err == nil, err
}

// ---- who did it ----

// people names the dashboard users and API keys behind versions and publications. A
// version stores the API key that made it; a dashboard user is named by the audit
// entry written in the same transaction (the newest entries only: older ones show the
// key, or nobody).
type people struct {
	emails   map[uuid.UUID]string
	keys     map[uuid.UUID]string // API key → its name, else prefix
	created  map[string]uuid.UUID // version number → user
	publish  map[string]uuid.UUID // env/version/at → user
	anyPubBy map[string]uuid.UUID // env/version/action → newest user
}

func pubKey(env string, version int, at time.Time) string {
	return env + "/" + strconv.Itoa(version) + "/" + strconv.FormatInt(at.UnixMicro(), 10)
}

func (s *Server) people(c echo.Context) (*people, error) {
	ctx := c.Request().Context()
	tid := sessionOf(c).TenantID
	p := &people{emails: map[uuid.UUID]string{}, keys: map[uuid.UUID]string{}, created: map[string]uuid.UUID{}, publish: map[string]uuid.UUID{}, anyPubBy: map[string]uuid.UUID{}}
	members, err := s.deps.Users.ListMembers(ctx, tid)
	if err != nil {
		return nil, err
	}
	for _, m := range members {
		p.emails[m.ID] = m.Email
	}
	keys, err := s.deps.Tenancy.ListKeys(ctx, tid)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if p.keys[k.ID] = k.Name; k.Name == "" {
			p.keys[k.ID] = k.Prefix
		}
	}
	page, err := s.deps.Tenancy.ListAudit(ctx, tenancy.ListAuditInput{TenantID: tid, Limit: tenancy.MaxAuditPage})
	if err != nil {
		return nil, err
	}
	for _, e := range page.Entries {
		if e.ActorUserID == nil {
			continue
		}
		switch e.Action {
		case "policy.create":
			p.created[e.ResourceID] = *e.ActorUserID
		case "policy.publish", "policy.rollback":
			var after struct {
				Version int `json:"version"`
			}
			if json.Unmarshal(e.After, &after) != nil {
				continue
			}
			p.publish[pubKey(e.ResourceID, after.Version, e.At)] = *e.ActorUserID
			k := e.ResourceID + "/" + strconv.Itoa(after.Version) + "/" + strings.TrimPrefix(e.Action, "policy.")
			if _, seen := p.anyPubBy[k]; !seen {
				p.anyPubBy[k] = *e.ActorUserID
			}
		}
	}
	return p, nil
}

func (p *people) name(user *uuid.UUID, key *uuid.UUID) string {
	switch {
	case user != nil && p.emails[*user] != "":
		return p.emails[*user]
	case user != nil:
		return "a former member"
	case key != nil && p.keys[*key] != "":
		return "API key " + strconv.Quote(p.keys[*key])
	case key != nil:
		return "API key " + key.String()[:8]
	}
	return "the CLI or an operator"
}

func (p *people) creator(v pgstore.Version) string {
	if u, ok := p.created[strconv.Itoa(v.Number)]; ok {
		return p.name(&u, nil)
	}
	return p.name(nil, v.CreatedBy)
}

func (p *people) publisher(pub pgstore.Publication) string {
	if u, ok := p.publish[pubKey(pub.Environment, pub.Version, pub.PublishedAt)]; ok {
		return p.name(&u, nil)
	}
	if pub.PublishedBy == nil {
		if u, ok := p.anyPubBy[pub.Environment+"/"+strconv.Itoa(pub.Version)+"/"+pub.Action]; ok {
			return p.name(&u, nil)
		}
	}
	return p.name(nil, pub.PublishedBy)
}

// ---- the list ----

type publicationRow struct {
	pgstore.Publication
	By string
}

type versionRow struct {
	pgstore.Version
	By           string
	Active       bool
	Publications []publicationRow
}

type policiesData struct {
	Environment string
	Active      *pgstore.VersionRef
	Versions    []versionRow
	// Older is the cursor of the next page, 0 when this is the last.
	Older int
}

// policiesPage lists the versions, newest first, with where each was published.
func (s *Server) policiesPage(c echo.Context) error {
	ctx := c.Request().Context()
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	before := 0
	if b := c.QueryParam("before"); b != "" {
		if before, err = strconv.Atoi(b); err != nil || before < 1 {
			return echo.NewHTTPError(http.StatusBadRequest, "That page link is not valid.")
		}
	}
	vs, err := s.deps.Policies.List(ctx, env.TenantID, before, policyPageSize+1)
	if err != nil {
		return err
	}
	d := policiesData{Environment: env.Name}
	if len(vs) > policyPageSize {
		vs = vs[:policyPageSize]
		d.Older = vs[len(vs)-1].Number
	}
	ref, ok, err := s.activeRef(c, env)
	if err != nil {
		return err
	}
	if ok {
		d.Active = &ref
	}
	who, err := s.people(c)
	if err != nil {
		return err
	}
	for _, v := range vs {
		row := versionRow{Version: v.Version, By: who.creator(v.Version), Active: ok && ref.Number == v.Number}
		for _, p := range v.Publications {
			row.Publications = append(row.Publications, publicationRow{Publication: p, By: who.publisher(p)})
		}
		d.Versions = append(d.Versions, row)
	}
	return s.render(c, http.StatusOK, "policies", d)
}

// ---- one version ----

// DiffRow is one line of a structural diff: something added, removed or changed at a
// document path.
type DiffRow struct {
	Kind, Path, From, To string
}

// diffRows flattens a diff's JSON into rows, section by section.
func diffRows(d pgstore.DiffResult) ([]DiffRow, error) {
	if d.Diff == nil || d.Empty {
		return nil, nil
	}
	raw, err := json.Marshal(d.Diff)
	if err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, err
	}
	var rows []DiffRow
	for _, sec := range []string{"policy", "credits", "plans", "exchange", "notifications"} {
		if err := walkDiff(&rows, sec, top[sec]); err != nil {
			return nil, err
		}
	}
	return rows, nil
}

func walkDiff(rows *[]DiffRow, path string, raw json.RawMessage) error {
	var node map[string]json.RawMessage
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if err := json.Unmarshal(raw, &node); err != nil {
		return err
	}
	if len(node) == 2 && node["from"] != nil && node["to"] != nil {
		*rows = append(*rows, DiffRow{Kind: "changed", Path: path, From: string(node["from"]), To: string(node["to"])})
		return nil
	}
	if _, isSet := node["added"]; isSet {
		for _, k := range []string{"removed", "added"} {
			var names []string
			if err := json.Unmarshal(node[k], &names); err != nil {
				return err
			}
			for _, n := range names {
				*rows = append(*rows, DiffRow{Kind: k, Path: path + "." + n})
			}
		}
		var changed map[string]json.RawMessage
		if err := json.Unmarshal(node["changed"], &changed); err != nil {
			return err
		}
		for _, n := range sortedKeys(changed) {
			if err := walkDiff(rows, path+"."+n, changed[n]); err != nil {
				return err
			}
		}
		if string(node["reordered"]) == "true" {
			*rows = append(*rows, DiffRow{Kind: "reordered", Path: path})
		}
		return nil
	}
	for _, k := range sortedKeys(node) {
		sub := path + "." + k
		if k == "fields" {
			sub = path // a changed item's own fields: no path segment of their own
		}
		if err := walkDiff(rows, sub, node[k]); err != nil {
			return err
		}
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

type policyData struct {
	Version      pgstore.Version
	Source       string
	CreatedBy    string
	Publications []publicationRow
	Environment  string
	Active       *pgstore.VersionRef
	IsActive     bool
	// PublishedHere: the version was active in this environment before (rollback
	// target); rollback is offered instead of publish then.
	PublishedHere bool
	Diff          []DiffRow
	DiffEmpty     bool
	Simulations   []simulate.Simulation
	Notice, Error string
}

// policyPage shows one version: its source, its diff against the active version, and
// the what-if, publish and rollback actions.
func (s *Server) policyPage(c echo.Context) error {
	return s.renderPolicy(c, http.StatusOK, policyData{Notice: policyNotices[c.QueryParam("done")]})
}

func (s *Server) renderPolicy(c echo.Context, status int, d policyData) error {
	ctx := c.Request().Context()
	n, err := versionParam(c)
	if err != nil {
		return err
	}
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	v, _, pubs, err := s.deps.Policies.Get(ctx, env.TenantID, n)
	if err != nil {
		return policyError(err)
	}
	d.Version, d.Source, d.Environment = v, string(v.Source), env.Name
	who, err := s.people(c)
	if err != nil {
		return err
	}
	d.CreatedBy = who.creator(v)
	for _, p := range pubs {
		d.Publications = append(d.Publications, publicationRow{Publication: p, By: who.publisher(p)})
		d.PublishedHere = d.PublishedHere || p.Environment == env.Name
	}
	ref, ok, err := s.activeRef(c, env)
	if err != nil {
		return err
	}
	if ok {
		d.Active, d.IsActive = &ref, ref.Number == n
		if !d.IsActive {
			diff, err := s.deps.Policies.Diff(ctx, env.TenantID, ref.Number, n)
			if err != nil {
				return policyError(err)
			}
			if d.Diff, err = diffRows(diff); err != nil {
				return err
			}
			d.DiffEmpty = diff.Empty
		}
	}
	if s.deps.Simulations != nil {
		sims, err := s.deps.Simulations.List(ctx, env, 0, 50)
		if err != nil {
			return err
		}
		for _, sim := range sims {
			if sim.CandidateVersion != nil && *sim.CandidateVersion == n && len(d.Simulations) < 5 {
				d.Simulations = append(d.Simulations, sim)
			}
		}
	}
	return s.render(c, status, "policy", d)
}

// confirmed reports whether the form's confirmation box was ticked.
func confirmed(c echo.Context) bool { return c.FormValue("confirm") == "yes" }

func (s *Server) publishPolicy(c echo.Context) error {
	n, err := versionParam(c)
	if err != nil {
		return err
	}
	if !confirmed(c) {
		return s.renderPolicy(c, http.StatusUnprocessableEntity, policyData{Error: "Tick the confirmation box to publish: publishing changes pricing for every connected SDK."})
	}
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	out, err := s.deps.Policies.Publish(c.Request().Context(), env, pgstore.PublishInput{Version: &n})
	if err != nil {
		return s.publishFailure(c, err)
	}
	return c.Redirect(http.StatusSeeOther, "/policies/"+strconv.Itoa(n)+"?done="+changedOr(out, "published"))
}

func (s *Server) rollbackPolicy(c echo.Context) error {
	n, err := versionParam(c)
	if err != nil {
		return err
	}
	if !confirmed(c) {
		return s.renderPolicy(c, http.StatusUnprocessableEntity, policyData{Error: "Tick the confirmation box to roll back: it changes pricing for every connected SDK."})
	}
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	out, err := s.deps.Policies.Rollback(c.Request().Context(), env, pgstore.RollbackInput{Version: &n})
	if err != nil {
		return s.publishFailure(c, err)
	}
	return c.Redirect(http.StatusSeeOther, "/policies/"+strconv.Itoa(n)+"?done="+changedOr(out, "rolledback"))
}

func changedOr(out pgstore.Outcome, done string) string {
	if !out.Changed {
		return "active"
	}
	return done
}

// publishFailure shows a refused publish or rollback on the version's page.
func (s *Server) publishFailure(c echo.Context, err error) error {
	var verr *validation.Error
	switch {
	case errors.Is(err, pgstore.ErrNeverPublished), errors.Is(err, pgstore.ErrNoRollbackTarget):
		return s.renderPolicy(c, http.StatusConflict, policyData{Error: sentence(err.Error())})
	case errors.As(err, &verr):
		return s.renderPolicy(c, http.StatusUnprocessableEntity, policyData{Error: fieldMessage(verr)})
	}
	return policyError(err)
}

func sentence(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:] + "."
}

// ---- the editor ----

type editorData struct {
	Source string
	Format string
	// From is the version the text started from (0: none).
	From     int
	Problems []policies.Problem
	Error    string
	Valid    bool
}

var editorFormats = []string{"yaml", "json", "toml"}

// starterPolicy prefills the editor of a tenant without any version.
const starterPolicy = `policy:
  credits:
    seat:
      description: A seat.
  plans:
    free:
      entitlements:
        seats:
          limit:
            credit: seat
            value: 1
`

// policyEditor opens the editor on the chosen version (?from=N), else the active one,
// else a starter document.
func (s *Server) policyEditor(c echo.Context) error {
	ctx := c.Request().Context()
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	d := editorData{Source: starterPolicy, Format: "yaml"}
	if f := c.QueryParam("from"); f != "" {
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return echo.NewHTTPError(http.StatusNotFound, "There is no such policy version.")
		}
		v, _, err := s.deps.Policies.Source(ctx, env.TenantID, n)
		if err != nil {
			return policyError(err)
		}
		d.Source, d.Format, d.From = string(v.Source), v.Format, v.Number
	} else {
		_, v, err := s.deps.Policies.Active(ctx, env)
		switch {
		case err == nil:
			d.Source, d.Format, d.From = string(v.Source), v.Format, v.Number
		case !errors.Is(err, pgstore.ErrNoActivePolicy) && !errors.Is(err, pgstore.ErrNotFound):
			return err
		}
	}
	return s.render(c, http.StatusOK, "policy_editor", d)
}

// savePolicy validates the document ("validate") or stores it as a new version
// ("save"); on a problem the page comes back with the user's text and each problem
// with its document path.
func (s *Server) savePolicy(c echo.Context) error {
	d := editorData{Source: c.FormValue("source"), Format: c.FormValue("format")}
	d.From, _ = strconv.Atoi(c.FormValue("from"))
	f, err := doctree.ParseFormat(d.Format)
	if err != nil || !slices.Contains(editorFormats, d.Format) {
		d.Format = ""
		d.Problems = []policies.Problem{{Path: "format", Message: "must be yaml, json or toml"}}
		return s.render(c, http.StatusUnprocessableEntity, "policy_editor", d)
	}
	in := pgstore.CreateInput{Format: f, Source: []byte(d.Source)}
	if c.FormValue("action") != "save" {
		if err := checkPolicy(in); err != nil {
			return s.editorFailure(c, d, err)
		}
		d.Valid = true
		return s.render(c, http.StatusOK, "policy_editor", d)
	}
	out, err := s.deps.Policies.Create(c.Request().Context(), sessionOf(c).TenantID, in)
	if err != nil {
		return s.editorFailure(c, d, err)
	}
	done := "created"
	if !out.IsNew {
		done = "unchanged"
	}
	return c.Redirect(http.StatusSeeOther, "/policies/"+strconv.Itoa(out.Version.Number)+"?done="+done)
}

// checkPolicy runs the checks Create runs before storing anything: parse and compile.
func checkPolicy(in pgstore.CreateInput) error {
	if err := in.Validate(); err != nil {
		return err
	}
	doc, err := policies.Parse(in.Source, in.Format)
	if err != nil {
		return err
	}
	_, err = policies.Compile(doc)
	return err
}

func (s *Server) editorFailure(c echo.Context, d editorData, err error) error {
	var pverr *policies.ValidationError
	var verr *validation.Error
	switch {
	case errors.As(err, &pverr):
		for _, p := range pverr.Problems {
			if p.Line > 0 && !strings.Contains(p.Message, "line ") {
				p.Message += " (line " + strconv.Itoa(p.Line) + ")"
			}
			if p.Path == "" {
				p.Path = "(document)"
			}
			d.Problems = append(d.Problems, p)
		}
	case errors.As(err, &verr):
		for _, f := range verr.Fields {
			d.Problems = append(d.Problems, policies.Problem{Path: f.Path, Message: f.Message})
		}
		if len(d.Problems) == 0 {
			d.Error = verr.Title
		}
	default:
		return err
	}
	return s.render(c, http.StatusUnprocessableEntity, "policy_editor", d)
}

// ---- what-if ----

// simulatePolicy prices the version against the active one over the default window:
// queued (the simulations worker runs it), or with mode=now computed right away (the
// publish dry run).
func (s *Server) simulatePolicy(c echo.Context) error {
	n, err := versionParam(c)
	if err != nil {
		return err
	}
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	if s.deps.Simulations == nil {
		return echo.NewHTTPError(http.StatusServiceUnavailable, "Simulations are not available on this server.")
	}
	in := simulate.CreateInput{Version: &n}
	switch c.FormValue("window") {
	case "", "last_month": // the simulation's default
	case "current":
		// A window that reaches the present replays each customer's period in
		// progress; one this short holds no period that ended.
		to := time.Now().UTC()
		from := to.Add(-time.Second)
		in.From, in.To = &from, &to
	default:
		return echo.NewHTTPError(http.StatusUnprocessableEntity, "window: must be last_month or current")
	}
	var sim simulate.Simulation
	if c.FormValue("mode") == "now" {
		sim, err = s.deps.Simulations.RunNow(c.Request().Context(), env, in)
	} else {
		sim, err = s.deps.Simulations.Create(c.Request().Context(), env, in)
	}
	if err != nil {
		var verr *validation.Error
		switch {
		case errors.Is(err, simulate.ErrNoPolicy):
			return s.renderPolicy(c, http.StatusConflict, policyData{Error: "Nothing is published to " + env.Name + " yet: there is no active version to compare with. Publish one first."})
		case errors.As(err, &verr):
			return s.renderPolicy(c, http.StatusUnprocessableEntity, policyData{Error: fieldMessage(verr)})
		}
		return policyError(err)
	}
	return c.Redirect(http.StatusSeeOther, "/policies/"+strconv.Itoa(n)+"/simulations/"+sim.ID.String())
}

// figuresRow is one line of current vs candidate figures.
type figuresRow struct {
	Label                          string
	Current, Candidate, Difference string
	Worse                          bool
}

type replayRow struct {
	replay.CustomerReport
	Worse  bool
	Denied bool
}

type simulationData struct {
	Version    int
	Sim        simulate.Simulation
	Pending    bool
	Totals     []figuresRow
	Customers  []replayRow
	MoreRows   int
	Report     *replay.Report
	CanPublish bool
}

// simulationRows is how many customers the result page lists.
const simulationRows = 50

// simulationPage shows a what-if: its status while it runs (the page refreshes
// itself), then its report.
func (s *Server) simulationPage(c echo.Context) error {
	n, err := versionParam(c)
	if err != nil {
		return err
	}
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	id, err := uuid.Parse(c.Param("id"))
	if err != nil || s.deps.Simulations == nil {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such simulation.")
	}
	sim, err := s.deps.Simulations.Get(c.Request().Context(), env, id)
	if errors.Is(err, simulate.ErrNotFound) || err == nil && (sim.CandidateVersion == nil || *sim.CandidateVersion != n) {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such simulation of version "+strconv.Itoa(n)+" in "+env.Name+".")
	}
	if err != nil {
		return err
	}
	d := simulationData{Version: n, Sim: sim, Pending: sim.Status == simulate.StatusQueued || sim.Status == simulate.StatusRunning, Report: sim.Result}
	if r := sim.Result; r != nil {
		t := r.Totals
		d.Totals = []figuresRow{
			{"Revenue", t.Current.Revenue, t.Candidate.Revenue, t.Difference.Revenue, negative(t.Difference.Revenue)},
			{"Cost", t.Current.Cost, t.Candidate.Cost, t.Difference.Cost, positive(t.Difference.Cost)},
			{"Margin", t.Current.Margin, t.Candidate.Margin, t.Difference.Margin, negative(t.Difference.Margin)},
		}
		d.Customers, d.MoreRows = worstFirst(r.Customers, simulationRows)
	}
	return s.render(c, http.StatusOK, "policy_simulation", d)
}

// worstFirst orders a report's customers for reading: the largest margin loss first,
// then those with denied usage, then by id; it keeps the first limit and counts the rest.
func worstFirst(cs []replay.CustomerReport, limit int) ([]replayRow, int) {
	rows := make([]replayRow, 0, len(cs))
	for _, cr := range cs {
		denied := false
		for _, h := range cr.HardLimits {
			denied = denied || !zero(h.Denied)
		}
		rows = append(rows, replayRow{CustomerReport: cr, Worse: negative(cr.Difference.Margin), Denied: denied})
	}
	slices.SortStableFunc(rows, func(a, b replayRow) int {
		if x, y := amount(a.Difference.Margin), amount(b.Difference.Margin); x != y {
			if x < y {
				return -1
			}
			return 1
		}
		if a.Denied != b.Denied {
			if a.Denied {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Customer, b.Customer)
	})
	if len(rows) > limit {
		return rows[:limit], len(rows) - limit
	}
	return rows, 0
}

// amount reads a report's decimal string for ordering rows (display only: decisions
// never use floats).
func amount(s string) float64 {
	f, _ := strconv.ParseFloat(strings.TrimSpace(s), 64)
	return f
}

func negative(s string) bool { return amount(s) < 0 }
func positive(s string) bool { return amount(s) > 0 }
func zero(s string) bool     { return amount(s) == 0 }
