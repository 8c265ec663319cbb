package tenancy

import (
	"errors"
	"fmt"
)

// Sentinel errors, for errors.Is. ErrNotFound and ErrConflict come wrapped in a
// *ResourceError that says which resource they are about; invalid inputs are a
// *validation.Error.
var (
	// ErrNotFound: the tenant, environment or key does not exist for this tenant.
	ErrNotFound = errors.New("not found")
	// ErrConflict: a tenant slug or environment name is taken.
	ErrConflict = errors.New("already exists")
	// ErrLastAdminKey: revoking the key would leave the tenant without an active admin key,
	// locked out of its own account.
	ErrLastAdminKey = errors.New("the tenant's last active admin key cannot be revoked: create another admin key first")
)

// Resources that a ResourceError names.
const (
	ResourceTenant      = "tenant"
	ResourceEnvironment = "environment"
	ResourceKey         = "key"
)

// ResourceError is an ErrNotFound or ErrConflict about one resource.
type ResourceError struct {
	// Err is ErrNotFound or ErrConflict.
	Err error
	// Resource is ResourceTenant, ResourceEnvironment or ResourceKey.
	Resource string
	// Name is the slug, name or id that was asked for; empty when it is not worth
	// repeating (it could not name anything).
	Name string
}

func (e *ResourceError) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("%s: %v", e.Resource, e.Err)
	}
	return fmt.Sprintf("%s %q: %v", e.Resource, e.Name, e.Err)
}

func (e *ResourceError) Unwrap() error { return e.Err }
