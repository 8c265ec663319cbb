package store

import (
	"context"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
)

var slugRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidSlug reports whether s can name a tenant.
func ValidSlug(s string) bool { return slugRE.MatchString(s) }

// DefaultEnvironments are created with every tenant.
var DefaultEnvironments = []string{"production", "staging"}

// Bootstrapped is a new tenant and its first admin key (the secret is shown once).
type Bootstrapped struct {
	Tenant       Tenant        `json:"tenant"`
	Environments []Environment `json:"environments"`
	AdminKey     APIKey        `json:"admin_key"`
	Secret       string        `json:"secret"`
}

// Bootstrap creates a tenant with its default environments and a first admin key, in one
// transaction, and records it in the audit log.
func (s *Store) Bootstrap(ctx context.Context, slug, name, requestID string) (Bootstrapped, error) {
	if !ValidSlug(slug) {
		return Bootstrapped{}, fmt.Errorf("tenant slug %q: use 1-63 lowercase letters, digits and dashes, starting with a letter or digit", slug)
	}
	if name == "" {
		name = slug
	}
	var out Bootstrapped
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		t, err := CreateTenant(ctx, tx, slug, name)
		if err != nil {
			return err
		}
		out.Tenant = t
		for _, env := range DefaultEnvironments {
			e, err := CreateEnvironment(ctx, tx, t.ID, env)
			if err != nil {
				return err
			}
			out.Environments = append(out.Environments, e)
		}
		out.AdminKey, out.Secret, err = CreateKey(ctx, tx, t.ID, KindAdmin, nil, "bootstrap", nil)
		if err != nil {
			return err
		}
		return RecordAudit(ctx, tx, AuditEntry{TenantID: t.ID, Action: "tenant.bootstrap", Resource: "tenant",
			ResourceID: t.ID.String(), RequestID: requestID}, nil, map[string]any{"tenant": t, "admin_key": out.AdminKey})
	})
	return out, err
}
