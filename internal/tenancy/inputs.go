package tenancy

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/store"
)

// Key kinds.
const (
	KindAdmin = store.KindAdmin
	KindSDK   = store.KindSDK
)

// maxNameBytes bounds display names of tenants and keys.
const maxNameBytes = 200

// MaxAuditPage is the largest page ListAudit returns.
const MaxAuditPage = 200

// Actor is who makes a change, as the audit log records it.
type Actor struct {
	// KeyID is the API key making the change; nil for an operator (the operator token,
	// the limitr CLI).
	KeyID *uuid.UUID
	// RequestID ties the audit entry to the request log ("cli" for the CLI).
	RequestID string
}

// CreateTenantInput creates a tenant with its default environments and a first admin key.
type CreateTenantInput struct {
	// Slug names the tenant: 1-63 lowercase letters, digits and dashes.
	Slug string
	// Name is a display name; empty means the slug.
	Name  string
	Actor Actor
}

// Validate reports every invalid field.
func (in CreateTenantInput) Validate() error {
	var errs []FieldError
	if !store.ValidSlug(in.Slug) {
		errs = append(errs, FieldError{Path: "slug", Message: "use 1-63 lowercase letters, digits and dashes, starting with a letter or digit"})
	}
	if fe := checkText("name", in.Name); fe != nil {
		errs = append(errs, *fe)
	}
	return invalid("invalid tenant", errs)
}

// CreateEnvironmentInput adds an environment to a tenant.
type CreateEnvironmentInput struct {
	TenantID uuid.UUID
	// Name is 1-63 lowercase letters, digits and dashes ("production", "eu-staging").
	Name  string
	Actor Actor
}

// Validate reports every invalid field.
func (in CreateEnvironmentInput) Validate() error {
	var errs []FieldError
	if in.TenantID == uuid.Nil {
		errs = append(errs, FieldError{Path: "tenant_id", Message: "is required"})
	}
	if !store.ValidSlug(in.Name) {
		errs = append(errs, FieldError{Path: "name", Message: "use 1-63 lowercase letters, digits and dashes"})
	}
	return invalid("invalid environment", errs)
}

// CreateKeyInput makes an API key. An admin key manages the whole tenant; an SDK key is
// bound to one environment.
type CreateKeyInput struct {
	TenantID uuid.UUID
	// Kind is KindAdmin or KindSDK.
	Kind string
	// Environment names the environment of an SDK key; empty for an admin key.
	Environment string
	// Name is a display name, for people telling keys apart.
	Name  string
	Actor Actor
}

// Validate reports every invalid field. Whether the environment exists is checked by
// CreateKey (ErrNotFound).
func (in CreateKeyInput) Validate() error {
	var errs []FieldError
	if in.TenantID == uuid.Nil {
		errs = append(errs, FieldError{Path: "tenant_id", Message: "is required"})
	}
	switch in.Kind {
	case KindAdmin:
		if in.Environment != "" {
			errs = append(errs, FieldError{Path: "environment", Message: "admin keys are not bound to an environment"})
		}
	case KindSDK:
		if in.Environment == "" {
			errs = append(errs, FieldError{Path: "environment", Message: "is required for an sdk key"})
		}
	default:
		errs = append(errs, FieldError{Path: "kind", Message: `must be "admin" or "sdk"`})
	}
	if fe := checkText("name", in.Name); fe != nil {
		errs = append(errs, *fe)
	}
	return invalid("invalid key", errs)
}

// RevokeKeyInput revokes one of a tenant's keys.
type RevokeKeyInput struct {
	TenantID uuid.UUID
	KeyID    uuid.UUID
	Actor    Actor
}

// Validate reports every invalid field.
func (in RevokeKeyInput) Validate() error {
	var errs []FieldError
	if in.TenantID == uuid.Nil {
		errs = append(errs, FieldError{Path: "tenant_id", Message: "is required"})
	}
	if in.KeyID == uuid.Nil {
		errs = append(errs, FieldError{Path: "id", Message: "is required"})
	}
	return invalid("invalid key revocation", errs)
}

// ListAuditInput asks for a page of a tenant's audit log, newest first.
type ListAuditInput struct {
	TenantID uuid.UUID
	// Before is the cursor of the previous page (an entry id, exclusive); 0 starts at the
	// newest entry.
	Before int64
	// Limit is the page size, 1 to MaxAuditPage.
	Limit int
}

// Validate reports every invalid field.
func (in ListAuditInput) Validate() error {
	var errs []FieldError
	if in.TenantID == uuid.Nil {
		errs = append(errs, FieldError{Path: "tenant_id", Message: "is required"})
	}
	if in.Before < 0 {
		errs = append(errs, FieldError{Path: "cursor", Message: "is not a cursor this API returned"})
	}
	if in.Limit < 1 || in.Limit > MaxAuditPage {
		errs = append(errs, FieldError{Path: "limit", Message: fmt.Sprintf("must be a whole number from 1 to %d", MaxAuditPage)})
	}
	return invalid("invalid query", errs)
}

// checkText bounds a free-text field: it ends up in lists, logs and the dashboard.
func checkText(field, v string) *FieldError {
	switch {
	case len(v) > maxNameBytes:
		return &FieldError{Path: field, Message: fmt.Sprintf("is longer than %d bytes", maxNameBytes)}
	case !utf8.ValidString(v):
		return &FieldError{Path: field, Message: "is not valid UTF-8"}
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return &FieldError{Path: field, Message: "must not contain control characters"}
	}
	return nil
}
