package users

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// ListMembers lists a tenant's members, owners first, then by email.
func (s *Service) ListMembers(ctx context.Context, tenantID uuid.UUID) ([]Member, error) {
	rows, err := s.pool.Query(ctx, `select u.id, u.email, u.name, u.created_at, m.role, m.created_at
		from memberships m join users u on u.id = m.user_id
		where m.tenant_id = $1
		order by array_position(array['owner','admin','editor','billing','viewer'], m.role), u.email`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("users: list members: %w", err)
	}
	defer rows.Close()
	out := []Member{}
	for rows.Next() {
		var m Member
		if err := rows.Scan(&m.ID, &m.Email, &m.Name, &m.CreatedAt, &m.Role, &m.Since); err != nil {
			return nil, fmt.Errorf("users: list members: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("users: list members: %w", err)
	}
	return out, nil
}

// ChangeRole changes a member's role. Only a role with PermManageUsers may, and only an
// owner may grant or take away the owner role; demoting the last owner is ErrLastOwner.
func (s *Service) ChangeRole(ctx context.Context, in ChangeRoleInput) (Member, error) {
	if err := in.Validate(); err != nil {
		return Member{}, err
	}
	var after Member
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		before, err := lockedMember(ctx, tx, in.TenantID, in.UserID)
		if err != nil {
			return err
		}
		if err := authorize(in.By, before.Role, in.Role); err != nil {
			return err
		}
		if before.Role == in.Role {
			after = before
			return nil // nothing changes, nothing to audit
		}
		if before.Role == RoleOwner {
			if err := otherOwnerLeft(ctx, tx, in.TenantID, in.UserID); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `update memberships set role = $3 where tenant_id = $1 and user_id = $2`,
			in.TenantID, in.UserID, in.Role); err != nil {
			return err
		}
		after = before
		after.Role = in.Role
		return audit(ctx, tx, in.TenantID, "member.role_change", "membership", in.UserID.String(), before, after)
	})
	if err != nil {
		return Member{}, fmt.Errorf("users: change role: %w", err)
	}
	return after, nil
}

// RemoveMember takes a member out of a tenant and ends their sessions in it. The same
// role rules as ChangeRole apply; removing the last owner is ErrLastOwner.
func (s *Service) RemoveMember(ctx context.Context, in RemoveMemberInput) error {
	if err := in.Validate(); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		before, err := lockedMember(ctx, tx, in.TenantID, in.UserID)
		if err != nil {
			return err
		}
		if err := authorize(in.By, before.Role, ""); err != nil {
			return err
		}
		if before.Role == RoleOwner {
			if err := otherOwnerLeft(ctx, tx, in.TenantID, in.UserID); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `delete from memberships where tenant_id = $1 and user_id = $2`, in.TenantID, in.UserID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `update user_sessions set revoked_at = $3
			where tenant_id = $1 and user_id = $2 and revoked_at is null`, in.TenantID, in.UserID, s.now()); err != nil {
			return err
		}
		return audit(ctx, tx, in.TenantID, "member.remove", "membership", in.UserID.String(), before, nil)
	})
	if err != nil {
		return fmt.Errorf("users: remove member: %w", err)
	}
	return nil
}

// authorize applies the role rules to a change of a member from role from to role to
// ("" for a removal or, with from "", a new member).
func authorize(by Actor, from, to Role) error {
	if by == (Actor{}) {
		return nil // the operator
	}
	if !Can(by.Role, PermManageUsers) {
		return ErrForbidden
	}
	if (from == RoleOwner || to == RoleOwner) && !Can(by.Role, PermManageOwners) {
		return ErrForbidden
	}
	return nil
}

// lockedMember locks the tenant's memberships (lockTenant) and loads one.
func lockedMember(ctx context.Context, tx pgx.Tx, tenantID, userID uuid.UUID) (Member, error) {
	if err := lockTenant(ctx, tx, tenantID); err != nil {
		return Member{}, err
	}
	var m Member
	err := tx.QueryRow(ctx, `select u.id, u.email, u.name, u.created_at, m.role, m.created_at
		from memberships m join users u on u.id = m.user_id
		where m.tenant_id = $1 and m.user_id = $2`, tenantID, userID).
		Scan(&m.ID, &m.Email, &m.Name, &m.CreatedAt, &m.Role, &m.Since)
	if errors.Is(err, pgx.ErrNoRows) {
		return Member{}, fmt.Errorf("member: %w", ErrNotFound)
	}
	return m, err
}

// otherOwnerLeft is ErrLastOwner unless the tenant has an owner besides userID.
func otherOwnerLeft(ctx context.Context, tx pgx.Tx, tenantID, userID uuid.UUID) error {
	var others int
	if err := tx.QueryRow(ctx, `select count(*) from memberships
		where tenant_id = $1 and role = 'owner' and user_id <> $2`, tenantID, userID).Scan(&others); err != nil {
		return err
	}
	if others == 0 {
		return ErrLastOwner
	}
	return nil
}
