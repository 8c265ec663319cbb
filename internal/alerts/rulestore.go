package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/expr"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
)

const ruleColumns = `id, name, kind, params, filters, condition, channels, enabled, created_at, updated_at`

func scanRule(row pgx.CollectableRow) (*Rule, error) {
	var r Rule
	var params, filters []byte
	if err := row.Scan(&r.ID, &r.Name, &r.Kind, &params, &filters, &r.Condition, &r.Channels, &r.Enabled, &r.CreatedAt, &r.UpdatedAt); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(params, &r.Params); err != nil {
		return nil, fmt.Errorf("rule %s params: %w", r.ID, err)
	}
	if err := json.Unmarshal(filters, &r.Filters); err != nil {
		return nil, fmt.Errorf("rule %s filters: %w", r.ID, err)
	}
	r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	if r.Channels == nil {
		r.Channels = []uuid.UUID{}
	}
	return &r, nil
}

func (r *Rule) compile() error {
	r.cond = nil
	if r.Condition == "" {
		return nil
	}
	m, err := expr.CompileMatch(r.Condition)
	if err != nil {
		return err
	}
	r.cond = m
	return nil
}

// Rules lists an environment's rules by name.
func (s *Service) Rules(ctx context.Context, env store.Environment) ([]*Rule, error) {
	rows, err := s.pool.Query(ctx, `select `+ruleColumns+` from alert_rules where tenant_id = $1 and environment_id = $2 order by name`,
		env.TenantID, env.ID)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanRule)
}

// Rule reads one rule.
func (s *Service) Rule(ctx context.Context, env store.Environment, id uuid.UUID) (*Rule, error) {
	return getRule(ctx, s.pool, env, id, false)
}

func getRule(ctx context.Context, db store.DBTX, env store.Environment, id uuid.UUID, lock bool) (*Rule, error) {
	q := `select ` + ruleColumns + ` from alert_rules where tenant_id = $1 and environment_id = $2 and id = $3`
	if lock {
		q += ` for update`
	}
	rows, err := db.Query(ctx, q, env.TenantID, env.ID, id)
	if err != nil {
		return nil, err
	}
	r, err := pgx.CollectExactlyOneRow(rows, scanRule)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("alert rule %s: %w", id, ErrNotFound)
	}
	return r, err
}

// CreateRule validates and stores a rule. Kind, name and channels are required;
// enabled defaults to true.
func (s *Service) CreateRule(ctx context.Context, env store.Environment, in RuleInput) (*Rule, error) {
	r := &Rule{Enabled: true, Channels: []uuid.UUID{}}
	return r, s.saveRule(ctx, env, in, r, true)
}

// UpdateRule changes the fields in sets and validates the result as a whole.
func (s *Service) UpdateRule(ctx context.Context, env store.Environment, id uuid.UUID, in RuleInput) (*Rule, error) {
	var out *Rule
	p, err := s.activePolicy(ctx, env) // before the transaction: it holds its connection
	if err != nil {
		return nil, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		r, err := getRule(ctx, tx, env, id, true)
		if err != nil {
			return err
		}
		before := *r
		if err := checkRule(ctx, tx, env, p, &in, r); err != nil {
			return err
		}
		row, err := r.encode()
		if err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `update alert_rules set name = $3, kind = $4, params = $5, filters = $6, condition = $7,
				channels = $8, enabled = $9, updated_at = now() where environment_id = $1 and id = $2 returning updated_at`,
			env.ID, id, r.Name, r.Kind, row.params, row.filters, r.Condition, r.Channels, r.Enabled).Scan(&r.UpdatedAt); err != nil {
			return nameConflict(err)
		}
		r.UpdatedAt = r.UpdatedAt.UTC()
		out = r
		return record(ctx, tx, env, "alert_rule.update", "alert_rule", id.String(), before, r)
	})
	return out, err
}

func (s *Service) saveRule(ctx context.Context, env store.Environment, in RuleInput, r *Rule, create bool) error {
	p, err := s.activePolicy(ctx, env) // before the transaction: it holds its connection
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if create {
			var errs validation.Errors
			if in.Kind == nil {
				errs.Add("kind", "is required")
			}
			if in.Name == nil {
				errs.Add("name", "is required")
			}
			if err := errs.Err("invalid alert rule"); err != nil {
				return err
			}
		}
		if err := checkRule(ctx, tx, env, p, &in, r); err != nil {
			return err
		}
		row, err := r.encode()
		if err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `insert into alert_rules (tenant_id, environment_id, name, kind, params, filters, condition, channels, enabled)
				values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning id, created_at, updated_at`,
			env.TenantID, env.ID, r.Name, r.Kind, row.params, row.filters, r.Condition, r.Channels, r.Enabled).Scan(&r.ID, &r.CreatedAt, &r.UpdatedAt); err != nil {
			return nameConflict(err)
		}
		r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
		return record(ctx, tx, env, "alert_rule.create", "alert_rule", r.ID.String(), nil, r)
	})
}

// checkRule applies in to r and validates the result against the active policy and
// the environment's channels.
func checkRule(ctx context.Context, tx pgx.Tx, env store.Environment, p *policies.Policy, in *RuleInput, r *Rule) error {
	var errs validation.Errors
	in.parseChannels(&errs)
	in.apply(r)
	known, err := channelIDs(ctx, tx, env)
	if err != nil {
		return err
	}
	r.validate(p, known, &errs)
	return errs.Err("invalid alert rule")
}

// DeleteRule removes a rule; the alerts it fired stay, with its name.
func (s *Service) DeleteRule(ctx context.Context, env store.Environment, id uuid.UUID) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		r, err := getRule(ctx, tx, env, id, true)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `delete from alert_rules where environment_id = $1 and id = $2`, env.ID, id); err != nil {
			return err
		}
		return record(ctx, tx, env, "alert_rule.delete", "alert_rule", id.String(), r, nil)
	})
}

func channelIDs(ctx context.Context, db store.DBTX, env store.Environment) (map[uuid.UUID]bool, error) {
	rows, err := db.Query(ctx, `select id from alert_channels where tenant_id = $1 and environment_id = $2`, env.TenantID, env.ID)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, err
	}
	out := make(map[uuid.UUID]bool, len(ids))
	for _, id := range ids {
		out[id] = true
	}
	return out, nil
}

func nameConflict(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		what := map[string]string{"alert_channels_name": "an alert channel", "alert_rules_name": "an alert rule"}[pe.ConstraintName]
		if what == "" {
			return fmt.Errorf("%w: %s", ErrConflict, pe.ConstraintName)
		}
		return fmt.Errorf("%s of that name exists in the environment: %w", what, ErrConflict)
	}
	return err
}
