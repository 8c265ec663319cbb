package aggregate

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/platform/pgtest"
)

// A batch reports each customer whose meters it changed once, with its tenant and
// environment, however many rows and meters of that customer it folded.
func TestBatchReportsTouchedCustomers(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	f := newFixture(t, pool, 3)
	insert(t, pool, f, []row{
		{f.customers[0], "tokens", jan, "1", "0", "0", 1},
		{f.customers[0], "seats", jan, "1", "0", "0", 1},
		{f.customers[0], "tokens", feb, "1", "0", "0", 1},
		{f.customers[2], "tokens", jan, "2", "0", "0", 1},
	}, time.Time{})
	b, err := New(pool, Options{}).RunOnce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var want []Touched
	for _, c := range []string{f.customers[0], f.customers[2]} {
		var uid uuid.UUID
		if err := pool.QueryRow(ctx, `select md5($1)::uuid`, c).Scan(&uid); err != nil {
			t.Fatal(err)
		}
		want = append(want, Touched{TenantID: f.tenant, EnvironmentID: f.env, CustomerUID: uid})
	}
	got := slices.Clone(b.Touched)
	order := func(a, b Touched) int { return slices.Compare(a.CustomerUID[:], b.CustomerUID[:]) }
	slices.SortFunc(got, order)
	slices.SortFunc(want, order)
	if b.Rows != 4 || b.Meters != 4 || !slices.Equal(got, want) {
		t.Fatalf("batch: rows %d meters %d touched %v, want %v", b.Rows, b.Meters, got, want)
	}
	if b, err := New(pool, Options{}).RunOnce(ctx); err != nil || b.Touched != nil {
		t.Fatalf("empty batch: %+v %v", b, err)
	}
}
