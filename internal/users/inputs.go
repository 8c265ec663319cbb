package users

import (
	"strings"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/validation"
)

// Password length bounds. The upper one bounds the work of hashing an attacker's input.
const (
	MinPasswordLen = 10
	MaxPasswordLen = 1024
	maxEmailLen    = 254
	maxNameLen     = 200
)

// Actor is the member making a change, for the role rules. The zero Actor is the
// operator (the limitr CLI), who may do anything.
type Actor struct {
	UserID uuid.UUID
	Role   Role
}

// NormalizeEmail is how emails are compared: trimmed and lower-cased.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

func validateEmail(errs *validation.Errors, path, email string) {
	e := NormalizeEmail(email)
	at := strings.LastIndexByte(e, '@')
	switch {
	case e == "":
		errs.Add(path, "is required")
	case len(e) > maxEmailLen:
		errs.Addf(path, "must be at most %d bytes", maxEmailLen)
	case at < 1 || at == len(e)-1 || strings.ContainsAny(e, " \t\r\n<>\"\x00"):
		errs.Add(path, "is not an email address")
	}
}

func validatePassword(errs *validation.Errors, path, pw string) {
	switch {
	case len(pw) < MinPasswordLen:
		errs.Addf(path, "must be at least %d characters", MinPasswordLen)
	case len(pw) > MaxPasswordLen:
		errs.Addf(path, "must be at most %d bytes", MaxPasswordLen)
	}
}

func validateRole(errs *validation.Errors, path string, r Role) {
	if !r.Valid() {
		errs.Add(path, "must be one of owner, admin, editor, billing, viewer")
	}
}

// CreateUserInput creates a user who is a member of a tenant (the CLI's create-user).
type CreateUserInput struct {
	TenantID uuid.UUID
	Email    string
	Name     string
	Password string
	Role     Role
}

// Validate reports every invalid field.
func (in CreateUserInput) Validate() error {
	var errs validation.Errors
	if in.TenantID == uuid.Nil {
		errs.Add("tenant_id", "is required")
	}
	validateEmail(&errs, "email", in.Email)
	errs.AddField(validation.Text("name", in.Name, maxNameLen))
	validatePassword(&errs, "password", in.Password)
	validateRole(&errs, "role", in.Role)
	return errs.Err("invalid user")
}

// LoginInput logs a user in.
type LoginInput struct {
	Email    string
	Password string
	// ClientIP is the client's address, throttled like the email.
	ClientIP  string
	UserAgent string
	// PreviousToken is the session cookie the browser sent, if any: it is revoked, and
	// never becomes the new session (session fixation).
	PreviousToken string
}

// Validate reports every invalid field.
func (in LoginInput) Validate() error {
	var errs validation.Errors
	if NormalizeEmail(in.Email) == "" {
		errs.Add("email", "is required")
	} else if len(in.Email) > maxEmailLen {
		errs.Addf("email", "must be at most %d bytes", maxEmailLen)
	}
	if in.Password == "" {
		errs.Add("password", "is required")
	} else if len(in.Password) > MaxPasswordLen {
		errs.Addf("password", "must be at most %d bytes", MaxPasswordLen)
	}
	return errs.Err("invalid login")
}

// InviteInput invites someone by email to a tenant with a role.
type InviteInput struct {
	TenantID uuid.UUID
	Email    string
	Role     Role
	By       Actor
}

// Validate reports every invalid field.
func (in InviteInput) Validate() error {
	var errs validation.Errors
	if in.TenantID == uuid.Nil {
		errs.Add("tenant_id", "is required")
	}
	validateEmail(&errs, "email", in.Email)
	validateRole(&errs, "role", in.Role)
	return errs.Err("invalid invite")
}

// AcceptInviteInput accepts an invite. Name and Password create the user when no user
// has the invite's email; an existing user just gains the membership.
type AcceptInviteInput struct {
	Token    string
	Name     string
	Password string
}

// Validate reports every invalid field. Whether a password is needed depends on the
// invite, so AcceptInvite checks that.
func (in AcceptInviteInput) Validate() error {
	var errs validation.Errors
	if in.Token == "" {
		errs.Add("token", "is required")
	}
	errs.AddField(validation.Text("name", in.Name, maxNameLen))
	if in.Password != "" {
		validatePassword(&errs, "password", in.Password)
	}
	return errs.Err("invalid invite acceptance")
}

// ChangeRoleInput changes a member's role.
type ChangeRoleInput struct {
	TenantID uuid.UUID
	UserID   uuid.UUID
	Role     Role
	By       Actor
}

// Validate reports every invalid field.
func (in ChangeRoleInput) Validate() error {
	var errs validation.Errors
	if in.TenantID == uuid.Nil {
		errs.Add("tenant_id", "is required")
	}
	if in.UserID == uuid.Nil {
		errs.Add("user_id", "is required")
	}
	validateRole(&errs, "role", in.Role)
	return errs.Err("invalid role change")
}

// RemoveMemberInput removes a member from a tenant.
type RemoveMemberInput struct {
	TenantID uuid.UUID
	UserID   uuid.UUID
	By       Actor
}

// Validate reports every invalid field.
func (in RemoveMemberInput) Validate() error {
	var errs validation.Errors
	if in.TenantID == uuid.Nil {
		errs.Add("tenant_id", "is required")
	}
	if in.UserID == uuid.Nil {
		errs.Add("user_id", "is required")
	}
	return errs.Err("invalid member removal")
}

// RevokeInviteInput withdraws a pending invite.
type RevokeInviteInput struct {
	TenantID uuid.UUID
	InviteID uuid.UUID
	By       Actor
}

// Validate reports every invalid field.
func (in RevokeInviteInput) Validate() error {
	var errs validation.Errors
	if in.TenantID == uuid.Nil {
		errs.Add("tenant_id", "is required")
	}
	if in.InviteID == uuid.Nil {
		errs.Add("invite_id", "is required")
	}
	return errs.Err("invalid invite revocation")
}
