package users

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors, for errors.Is.
var (
	// ErrNotFound: the user, member or invite does not exist in this tenant.
	ErrNotFound = errors.New("not found")
	// ErrEmailTaken: a user with this email exists.
	ErrEmailTaken = errors.New("a user with this email already exists")
	// ErrAlreadyMember: the user is already a member of the tenant.
	ErrAlreadyMember = errors.New("already a member of this tenant")
	// ErrInvalidCredentials: unknown email or wrong password (deliberately not told apart).
	ErrInvalidCredentials = errors.New("wrong email or password")
	// ErrNoMembership: the user belongs to no tenant, so there is nothing to log in to.
	ErrNoMembership = errors.New("this account has no access to any tenant")
	// ErrThrottled: too many failed logins; a *ThrottledError says for how long.
	ErrThrottled = errors.New("too many failed logins")
	// ErrSessionInvalid: the session token is unknown, revoked or expired.
	ErrSessionInvalid = errors.New("session is not valid")
	// ErrInviteInvalid: the invite token is unknown, used, revoked or expired.
	ErrInviteInvalid = errors.New("this invite link is not valid: it may have expired or been used already")
	// ErrLastOwner: the change would leave the tenant without an owner.
	ErrLastOwner = errors.New("the tenant's last owner cannot be removed or demoted: make another member owner first")
	// ErrForbidden: the acting member's role does not allow the change.
	ErrForbidden = errors.New("your role does not allow this")
)

// ThrottledError is ErrThrottled with the time to wait.
type ThrottledError struct {
	RetryAfter time.Duration
}

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("%v: try again in %d minute(s)", ErrThrottled, e.Minutes())
}

// Minutes is RetryAfter in whole minutes, rounded up, at least 1.
func (e *ThrottledError) Minutes() int {
	mins := int((e.RetryAfter + time.Minute - 1) / time.Minute)
	return max(mins, 1)
}

func (e *ThrottledError) Unwrap() error { return ErrThrottled }
