package store

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
)

// AuditEntry is one mutating call.
type AuditEntry struct {
	ID            int64           `json:"id"`
	TenantID      uuid.UUID       `json:"-"`
	EnvironmentID *uuid.UUID      `json:"environment_id,omitempty"`
	ActorKeyID    *uuid.UUID      `json:"actor_key_id,omitempty"`
	ActorUserID   *uuid.UUID      `json:"actor_user_id,omitempty"`
	Action        string          `json:"action"`
	Resource      string          `json:"resource"`
	ResourceID    string          `json:"resource_id"`
	Before        json.RawMessage `json:"before,omitempty"`
	After         json.RawMessage `json:"after,omitempty"`
	RequestID     string          `json:"request_id,omitempty"`
	At            time.Time       `json:"at"`
}

func rawJSON(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	if raw, ok := v.(json.RawMessage); ok {
		return raw, nil
	}
	return json.Marshal(v)
}

// RecordAudit writes an audit entry, normally in the same transaction as the change.
// The actor and request id come from ctx (WithActor) unless e names them.
func RecordAudit(ctx context.Context, db DBTX, e AuditEntry, before, after any) error {
	if a := ActorFrom(ctx); e.ActorKeyID == nil && e.ActorUserID == nil && e.RequestID == "" {
		e.ActorKeyID, e.ActorUserID, e.RequestID = a.KeyID, a.UserID, a.RequestID
	}
	b, err := rawJSON(before)
	if err != nil {
		return err
	}
	a, err := rawJSON(after)
	if err != nil {
		return err
	}
	_, err = db.Exec(ctx, `insert into audit_log (tenant_id, environment_id, actor_key_id, actor_user_id, action, resource, resource_id, before, after, request_id)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		e.TenantID, e.EnvironmentID, e.ActorKeyID, e.ActorUserID, e.Action, e.Resource, e.ResourceID, b, a, e.RequestID)
	return err
}

// ListAudit pages a tenant's audit log newest first; before is an exclusive cursor (0 = start).
func ListAudit(ctx context.Context, db DBTX, tenantID uuid.UUID, before int64, limit int) ([]AuditEntry, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := db.Query(ctx, `select id, environment_id, actor_key_id, actor_user_id, action, resource, resource_id, before, after, request_id, at
		from audit_log where tenant_id = $1 and id < $2 order by id desc limit $3`, tenantID, before, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		e := AuditEntry{TenantID: tenantID}
		if err := rows.Scan(&e.ID, &e.EnvironmentID, &e.ActorKeyID, &e.ActorUserID, &e.Action, &e.Resource, &e.ResourceID, &e.Before, &e.After, &e.RequestID, &e.At); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Change is an entry of the feed SDKs follow.
type Change struct {
	ID            int64           `json:"id"`
	EnvironmentID uuid.UUID       `json:"environment_id"`
	Kind          string          `json:"kind"`
	Subject       string          `json:"subject"`
	Payload       json.RawMessage `json:"payload"`
	CreatedAt     time.Time       `json:"created_at"`
}

// AppendChange adds to the change feed in the caller's transaction.
func AppendChange(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, kind, subject string, payload any) (int64, error) {
	p, err := rawJSON(payload)
	if err != nil {
		return 0, err
	}
	if p == nil {
		p = []byte("{}")
	}
	var id int64
	err = db.QueryRow(ctx, `insert into change_feed (tenant_id, environment_id, kind, subject, payload) values ($1, $2, $3, $4, $5) returning id`,
		tenantID, envID, kind, subject, p).Scan(&id)
	return id, err
}

// ChangesSince lists an environment's changes after a cursor, oldest first.
func ChangesSince(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, after int64, limit int) ([]Change, error) {
	rows, err := db.Query(ctx, `select id, environment_id, kind, subject, payload, created_at from change_feed
		where tenant_id = $1 and environment_id = $2 and id > $3 order by id limit $4`, tenantID, envID, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Change{}
	for rows.Next() {
		var c Change
		if err := rows.Scan(&c.ID, &c.EnvironmentID, &c.Kind, &c.Subject, &c.Payload, &c.CreatedAt); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// ChangeFeedHorizon is the newest change id retention has removed from an
// environment's feed (0: none): a follower whose cursor is older has missed changes.
func ChangeFeedHorizon(ctx context.Context, db DBTX, tenantID, envID uuid.UUID) (int64, error) {
	var id int64
	err := db.QueryRow(ctx, `select coalesce((select purged_through from change_feed_horizon
		where tenant_id = $1 and environment_id = $2), 0)`, tenantID, envID).Scan(&id)
	return id, err
}
