package users

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/validation"
)

// Invite is an invitation to join a tenant with a role. Its token is shown once, in
// the link, and stored only as a hash.
type Invite struct {
	ID         uuid.UUID  `json:"id"`
	TenantID   uuid.UUID  `json:"tenant_id"`
	Email      string     `json:"email"`
	Role       Role       `json:"role"`
	InvitedBy  *uuid.UUID `json:"invited_by,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
	AcceptedAt *time.Time `json:"accepted_at,omitempty"`
}

// PendingInvite is an invite looked up by its token, before it is accepted.
type PendingInvite struct {
	Invite
	// UserExists: someone already has the invite's email, so accepting adds a
	// membership and asks for no password.
	UserExists bool
}

const inviteColumns = `id, tenant_id, email, role, invited_by, created_at, expires_at, accepted_at`

func scanInvite(row pgx.Row) (Invite, error) {
	var inv Invite
	err := row.Scan(&inv.ID, &inv.TenantID, &inv.Email, &inv.Role, &inv.InvitedBy, &inv.CreatedAt, &inv.ExpiresAt, &inv.AcceptedAt)
	return inv, err
}

// CreateInvite invites an email to a tenant with a role and returns the invite with its
// token. The same role rules as ChangeRole apply; inviting a current member is
// ErrAlreadyMember.
func (s *Service) CreateInvite(ctx context.Context, in InviteInput) (Invite, string, error) {
	if err := in.Validate(); err != nil {
		return Invite{}, "", err
	}
	if err := authorize(in.By, "", in.Role); err != nil {
		return Invite{}, "", fmt.Errorf("users: invite: %w", err)
	}
	token, hash, err := newToken()
	if err != nil {
		return Invite{}, "", err
	}
	now := s.now()
	inv := Invite{ID: uuid.New(), TenantID: in.TenantID, Email: NormalizeEmail(in.Email), Role: in.Role,
		CreatedAt: now, ExpiresAt: now.Add(s.cfg.InviteTTL)}
	if in.By.UserID != uuid.Nil {
		by := in.By.UserID
		inv.InvitedBy = &by
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var member bool
		if err := tx.QueryRow(ctx, `select exists (select 1 from memberships m join users u on u.id = m.user_id
			where m.tenant_id = $1 and u.email = $2)`, in.TenantID, inv.Email).Scan(&member); err != nil {
			return err
		}
		if member {
			return ErrAlreadyMember
		}
		_, err := tx.Exec(ctx, `insert into user_invites (id, tenant_id, email, role, token_hash, invited_by, created_at, expires_at)
			values ($1, $2, $3, $4, $5, $6, $7, $8)`, inv.ID, inv.TenantID, inv.Email, inv.Role, hash, inv.InvitedBy, inv.CreatedAt, inv.ExpiresAt)
		if isForeignKeyViolation(err) {
			return fmt.Errorf("tenant: %w", ErrNotFound)
		} else if err != nil {
			return err
		}
		return audit(ctx, tx, in.TenantID, "invite.create", "invite", inv.ID.String(), nil, inv)
	})
	if err != nil {
		return Invite{}, "", fmt.Errorf("users: invite: %w", err)
	}
	return inv, token, nil
}

// ListInvites lists a tenant's invites that can still be accepted, newest first.
func (s *Service) ListInvites(ctx context.Context, tenantID uuid.UUID) ([]Invite, error) {
	rows, err := s.pool.Query(ctx, `select `+inviteColumns+` from user_invites
		where tenant_id = $1 and accepted_at is null and revoked_at is null and expires_at > $2
		order by created_at desc`, tenantID, s.now())
	if err != nil {
		return nil, fmt.Errorf("users: list invites: %w", err)
	}
	defer rows.Close()
	out := []Invite{}
	for rows.Next() {
		inv, err := scanInvite(rows)
		if err != nil {
			return nil, fmt.Errorf("users: list invites: %w", err)
		}
		out = append(out, inv)
	}
	return out, rows.Err()
}

// RevokeInvite withdraws a pending invite: its link stops working.
func (s *Service) RevokeInvite(ctx context.Context, in RevokeInviteInput) error {
	if err := in.Validate(); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		inv, err := scanInvite(tx.QueryRow(ctx, `update user_invites set revoked_at = $3
			where tenant_id = $1 and id = $2 and accepted_at is null and revoked_at is null
			returning `+inviteColumns, in.TenantID, in.InviteID, s.now()))
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("invite: %w", ErrNotFound)
		} else if err != nil {
			return err
		}
		if err := authorize(in.By, "", inv.Role); err != nil {
			return err // rolls the update back
		}
		return audit(ctx, tx, in.TenantID, "invite.revoke", "invite", inv.ID.String(), inv, nil)
	})
	if err != nil {
		return fmt.Errorf("users: revoke invite: %w", err)
	}
	return nil
}

// PendingInviteByToken looks up an invite that can still be accepted; any other token is
// ErrInviteInvalid.
func (s *Service) PendingInviteByToken(ctx context.Context, token string) (PendingInvite, error) {
	if token == "" || len(token) > 128 {
		return PendingInvite{}, ErrInviteInvalid
	}
	var p PendingInvite
	err := s.pool.QueryRow(ctx, `select i.id, i.tenant_id, i.email, i.role, i.invited_by, i.created_at, i.expires_at, i.accepted_at,
			exists (select 1 from users u where u.email = i.email)
		from user_invites i
		where i.token_hash = $1 and i.accepted_at is null and i.revoked_at is null and i.expires_at > $2`,
		hashToken(token), s.now()).Scan(&p.ID, &p.TenantID, &p.Email, &p.Role, &p.InvitedBy, &p.CreatedAt, &p.ExpiresAt,
		&p.AcceptedAt, &p.UserExists)
	if errors.Is(err, pgx.ErrNoRows) {
		return PendingInvite{}, ErrInviteInvalid
	} else if err != nil {
		return PendingInvite{}, fmt.Errorf("users: invite: %w", err)
	}
	return p, nil
}

// AcceptInvite uses an invite, once: it creates the user with in's name and password
// when no user has the invite's email, or adds the membership to the existing user.
// A used, revoked or expired invite is ErrInviteInvalid.
func (s *Service) AcceptInvite(ctx context.Context, in AcceptInviteInput) (Member, error) {
	if err := in.Validate(); err != nil {
		return Member{}, err
	}
	// Hashed before the transaction, so no row stays locked for the hash's 30 ms.
	var hash string
	if in.Password != "" {
		var err error
		if hash, err = HashPassword(in.Password, s.cfg.Hash); err != nil {
			return Member{}, err
		}
	}
	var m Member
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		now := s.now()
		inv, err := scanInvite(tx.QueryRow(ctx, `select `+inviteColumns+` from user_invites
			where token_hash = $1 and accepted_at is null and revoked_at is null and expires_at > $2
			for update`, hashToken(in.Token), now))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrInviteInvalid
		} else if err != nil {
			return err
		}
		u, err := s.inviteUser(ctx, tx, inv, in.Name, hash)
		if err != nil {
			return err
		}
		if err := lockTenant(ctx, tx, inv.TenantID); err != nil {
			return err
		}
		if m, err = s.addMember(ctx, tx, inv.TenantID, u, inv.Role); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `update user_invites set accepted_at = $2, accepted_by = $3 where id = $1`, inv.ID, now, u.ID); err != nil {
			return err
		}
		return audit(ctx, tx, inv.TenantID, "invite.accept", "invite", inv.ID.String(), nil, map[string]any{"user_id": u.ID, "role": inv.Role})
	})
	if err != nil {
		return Member{}, fmt.Errorf("users: accept invite: %w", err)
	}
	return m, nil
}

// inviteUser is the user with the invite's email, created with hash when there is none.
func (s *Service) inviteUser(ctx context.Context, tx pgx.Tx, inv Invite, name, hash string) (User, error) {
	var u User
	err := tx.QueryRow(ctx, `select id, email, name, created_at from users where email = $1`, inv.Email).
		Scan(&u.ID, &u.Email, &u.Name, &u.CreatedAt)
	if err == nil {
		return u, nil
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return User{}, err
	}
	if hash == "" {
		return User{}, validation.New("invalid invite acceptance", "password", "is required to create your account")
	}
	if u, err = s.insertUser(ctx, tx, inv.Email, name, hash); err != nil {
		return User{}, err
	}
	return u, audit(ctx, tx, inv.TenantID, "user.create", "user", u.ID.String(), nil, u)
}
