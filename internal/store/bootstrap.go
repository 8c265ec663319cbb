package store

import "regexp"

var slugRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidSlug reports whether s can name a tenant.
func ValidSlug(s string) bool { return slugRE.MatchString(s) }

// DefaultEnvironments are created with every tenant.
var DefaultEnvironments = []string{"production", "staging"}

// Bootstrapped is a new tenant and its first admin key (the secret is shown once); the
// tenancy service makes it.
type Bootstrapped struct {
	Tenant       Tenant        `json:"tenant"`
	Environments []Environment `json:"environments"`
	AdminKey     APIKey        `json:"admin_key"`
	Secret       string        `json:"secret"`
}
