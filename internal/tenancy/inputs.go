package tenancy

import (
	"fmt"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
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

// CreateTenantInput creates a tenant with its default environments and a first admin key.
type CreateTenantInput struct {
	// Slug names the tenant: 1-63 lowercase letters, digits and dashes.
	Slug string
	// Name is a display name; empty means the slug.
	Name string
}

// Validate reports every invalid field.
func (in CreateTenantInput) Validate() error {
	var errs validation.Errors
	if !store.ValidSlug(in.Slug) {
		errs.Add("slug", "use 1-63 lowercase letters, digits and dashes, starting with a letter or digit")
	}
	errs.AddField(validation.Text("name", in.Name, maxNameBytes))
	return errs.Err("invalid tenant")
}

// CreateEnvironmentInput adds an environment to a tenant.
type CreateEnvironmentInput struct {
	TenantID uuid.UUID
	// Name is 1-63 lowercase letters, digits and dashes ("production", "eu-staging").
	Name string
	// Live marks an environment that bills real money (test clocks are refused there);
	// nil: live when it is named "production".
	Live *bool
}

// Validate reports every invalid field.
func (in CreateEnvironmentInput) Validate() error {
	var errs validation.Errors
	if in.TenantID == uuid.Nil {
		errs.Add("tenant_id", "is required")
	}
	if !store.ValidSlug(in.Name) {
		errs.Add("name", "use 1-63 lowercase letters, digits and dashes")
	}
	return errs.Err("invalid environment")
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
	Name string
}

// Validate reports every invalid field. Whether the environment exists is checked by
// CreateKey (ErrNotFound).
func (in CreateKeyInput) Validate() error {
	var errs validation.Errors
	if in.TenantID == uuid.Nil {
		errs.Add("tenant_id", "is required")
	}
	switch in.Kind {
	case KindAdmin:
		if in.Environment != "" {
			errs.Add("environment", "admin keys are not bound to an environment")
		}
	case KindSDK:
		if in.Environment == "" {
			errs.Add("environment", "is required for an sdk key")
		}
	default:
		errs.Add("kind", `must be "admin" or "sdk"`)
	}
	errs.AddField(validation.Text("name", in.Name, maxNameBytes))
	return errs.Err("invalid key")
}

// RevokeKeyInput revokes one of a tenant's keys.
type RevokeKeyInput struct {
	TenantID uuid.UUID
	KeyID    uuid.UUID
}

// Validate reports every invalid field.
func (in RevokeKeyInput) Validate() error {
	var errs validation.Errors
	if in.TenantID == uuid.Nil {
		errs.Add("tenant_id", "is required")
	}
	if in.KeyID == uuid.Nil {
		errs.Add("id", "is required")
	}
	return errs.Err("invalid key revocation")
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
	var errs validation.Errors
	if in.TenantID == uuid.Nil {
		errs.Add("tenant_id", "is required")
	}
	if in.Before < 0 {
		errs.Add("cursor", "is not a cursor this API returned")
	}
	if in.Limit < 1 || in.Limit > MaxAuditPage {
		errs.Add("limit", fmt.Sprintf("must be a whole number from 1 to %d", MaxAuditPage))
	}
	return errs.Err("invalid query")
}
