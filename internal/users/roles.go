package users

// Role is what a member may do in a tenant.
type Role string

// The roles, from most to least powerful.
const (
	// RoleOwner may do everything, including making and removing other owners.
	RoleOwner Role = "owner"
	// RoleAdmin may do everything but grant, change or remove the owner role.
	RoleAdmin Role = "admin"
	// RoleEditor edits and publishes policies, and manages customers and alerts.
	RoleEditor Role = "editor"
	// RoleBilling manages invoices and the Stripe connection.
	RoleBilling Role = "billing"
	// RoleViewer reads everything and changes nothing.
	RoleViewer Role = "viewer"
)

// Roles lists every role, most powerful first (the order a role picker shows).
var Roles = []Role{RoleOwner, RoleAdmin, RoleEditor, RoleBilling, RoleViewer}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool {
	for _, x := range Roles {
		if r == x {
			return true
		}
	}
	return false
}

// Permission is one kind of action in the dashboard.
type Permission string

// The permissions. The web layer asks Can both to hide a button and to refuse the POST
// behind it, so the two can never disagree.
const (
	PermView            Permission = "view"
	PermEditPolicy      Permission = "policy.edit"
	PermPublishPolicy   Permission = "policy.publish"
	PermManageCustomers Permission = "customers.manage"
	PermManageAlerts    Permission = "alerts.manage"
	PermManageBilling   Permission = "billing.manage"
	PermManageSettings  Permission = "settings.manage"
	PermManageKeys      Permission = "keys.manage"
	PermManageUsers     Permission = "users.manage"
	// PermManageOwners is granting, changing or removing the owner role.
	PermManageOwners Permission = "owners.manage"
)

// permissions is the role → permission table, written once.
var permissions = map[Role][]Permission{
	RoleOwner: {PermView, PermEditPolicy, PermPublishPolicy, PermManageCustomers, PermManageAlerts,
		PermManageBilling, PermManageSettings, PermManageKeys, PermManageUsers, PermManageOwners},
	RoleAdmin: {PermView, PermEditPolicy, PermPublishPolicy, PermManageCustomers, PermManageAlerts,
		PermManageBilling, PermManageSettings, PermManageKeys, PermManageUsers},
	RoleEditor:  {PermView, PermEditPolicy, PermPublishPolicy, PermManageCustomers, PermManageAlerts},
	RoleBilling: {PermView, PermManageBilling},
	RoleViewer:  {PermView},
}

// Can reports whether role grants perm. An unknown role grants nothing.
func Can(role Role, perm Permission) bool {
	for _, p := range permissions[role] {
		if p == perm {
			return true
		}
	}
	return false
}
