// Package pgstoretest publishes policy documents straight into a test database, for
// the tests of domains that read the active policy (billing, alerts, analytics).
package pgstoretest

import (
	"context"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
)

// Publish saves the YAML document src as a new version of the tenant's policy and
// publishes it to the environment, failing tb on any error.
func Publish(tb testing.TB, pool *pgxpool.Pool, tenantID, envID uuid.UUID, src string) {
	tb.Helper()
	ctx := context.Background()
	p, err := policies.Load([]byte(src), doctree.FormatYAML)
	if err != nil {
		tb.Fatal(err)
	}
	canon, err := policies.Encode(p.Doc, doctree.FormatJSON)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := pgstore.CreateVersion(ctx, pool, tenantID, "yaml", []byte(src), canon, p.Hash, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := pgstore.Publish(ctx, tx, tenantID, envID, v, pgstore.ActionPublish, nil)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
}
