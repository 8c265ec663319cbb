package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/users"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// navItem is an entry of the navigation. Section pages not built yet are served by
// section(); a page of its own replaces that by setting Section false and adding a route.
type navItem struct {
	Key, Label, Path string
	Section          bool
}

var navItems = []navItem{
	{"overview", "Overview", "/", false},
	{"policies", "Policies", "/policies", false},
	{"customers", "Customers", "/customers", false},
	{"invoices", "Invoices", "/invoices", false},
	{"alerts", "Alerts", "/alerts", false},
	{"settings", "Settings", "/settings/users", false},
}

// pages are the parsed templates: each page is templates/layout.html plus its own file.
type pages struct {
	byName map[string]*template.Template
}

func parsePages() (*pages, error) {
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, file := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(file, "templates/"), ".html")
		if name == "layout" || strings.HasPrefix(name, "_") {
			continue // templates/_*.html are partials every page may use
		}
		t, err := template.New(name).ParseFS(templateFS, "templates/layout.html", "templates/_*.html", file)
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", name, err)
		}
		p.byName[name] = t
	}
	return p, nil
}

// Page is what every template sees: the layout's fields and the page's Data.
type Page struct {
	// Nav is the key of the navigation entry to highlight.
	Nav     string
	NavItem []navItem
	// Session is nil on the logged-out pages (login, invite, errors).
	Session      *users.Session
	TenantName   string
	Environments []tenancy.Environment
	// Environment is the environment the dashboard shows.
	Environment string
	CSRFToken   string
	// Path is the request path, for forms that come back to it.
	Path string
	Data any
}

// Can reports whether the session's role grants perm: templates hide what requirePerm
// would refuse.
func (p Page) Can(perm string) bool {
	return p.Session != nil && users.Can(p.Session.Role, users.Permission(perm))
}

// render writes the page name with status, filling the layout's fields from the request.
func (s *Server) render(c echo.Context, status int, name string, data any) error {
	t, ok := s.pages.byName[name]
	if !ok {
		return fmt.Errorf("web: no page %q", name)
	}
	p := Page{Nav: navKey(c.Request().URL.Path), NavItem: navItems, Session: sessionOf(c),
		CSRFToken: s.csrfToken(c), Path: c.Request().URL.Path, Data: data}
	if p.Session != nil {
		if err := s.fillTenant(c, &p); err != nil {
			return err
		}
	}
	var buf bytes.Buffer // rendered whole first, so a template error is a clean 500
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		return fmt.Errorf("web: render %s: %w", name, err)
	}
	return c.HTMLBlob(status, buf.Bytes())
}

// fillTenant adds the tenant's name and environments, and picks the session's
// environment (the first one when it has none or it is gone).
func (s *Server) fillTenant(c echo.Context, p *Page) error {
	ctx := c.Request().Context()
	t, err := s.deps.Tenancy.Tenant(ctx, p.Session.TenantID)
	if err != nil {
		return err
	}
	p.TenantName = t.Name
	if p.Environments, err = s.deps.Tenancy.ListEnvironments(ctx, t.ID); err != nil {
		return err
	}
	p.Environment = currentEnvironment(p.Session, p.Environments)
	return nil
}

func currentEnvironment(sess *users.Session, envs []tenancy.Environment) string {
	for _, e := range envs {
		if e.Name == sess.Environment {
			return e.Name
		}
	}
	if len(envs) > 0 {
		return envs[0].Name
	}
	return ""
}

func navKey(path string) string {
	for _, n := range navItems[1:] {
		if path == n.Path || strings.HasPrefix(path, strings.TrimSuffix(n.Path, "/users")+"/") || path == strings.TrimSuffix(n.Path, "/users") {
			return n.Key
		}
	}
	return "overview"
}

func staticHandler() http.Handler {
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // the embed directive guarantees the directory
	}
	files := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listings
			return
		}
		files.ServeHTTP(w, r)
	})
}
