package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
)

// Customer vouchers (migrations/0014_vouchers.up.sql): at most one per customer, in
// customer_vouchers; what SDKs debited from each voucher, per customer uid and voucher
// id, in voucher_debit_totals (added by CommitUsageBatch).

// CustomerVoucher is a customer's voucher as the API returns it (wire.CustomerVoucher).
type CustomerVoucher = wire.CustomerVoucher

// NewVoucher is a voucher to set: the id is the caller's (new on every set).
type NewVoucher struct {
	ID        string
	Runes     *num.Dec // nil: the voucher only expires
	ExpiresAt time.Time
	SetBy     *uuid.UUID
}

// VoucherDebit is what an SDK instance debited from one voucher of a customer.
type VoucherDebit struct {
	CustomerID  string
	CustomerUID uuid.UUID
	VoucherID   string
	Runes       num.Dec
}

// PutVoucher replaces a customer's voucher (the caller holds the customer's row lock):
// the previous one is removed, its debits stay under its id.
func PutVoucher(ctx context.Context, tx DBTX, tenantID, envID uuid.UUID, c Customer, v NewVoucher) error {
	if _, err := tx.Exec(ctx, `delete from customer_vouchers where tenant_id = $1 and environment_id = $2 and customer_id = $3`,
		tenantID, envID, c.ID); err != nil {
		return fmt.Errorf("store: remove the previous voucher: %w", err)
	}
	var runes *string
	if v.Runes != nil {
		r := v.Runes.String()
		runes = &r
	}
	if _, err := tx.Exec(ctx, `insert into customer_vouchers (id, tenant_id, environment_id, customer_id, customer_uid, runes, expires_at, set_by)
		values ($1, $2, $3, $4, $5, cast($6::text as numeric), $7, $8)`,
		v.ID, tenantID, envID, c.ID, c.UID, runes, v.ExpiresAt, v.SetBy); err != nil {
		return fmt.Errorf("store: insert voucher: %w", err)
	}
	return nil
}

// DeleteVoucher removes a customer's voucher; ErrNotFound when it has none.
func DeleteVoucher(ctx context.Context, tx DBTX, tenantID, envID uuid.UUID, customerID string) error {
	tag, err := tx.Exec(ctx, `delete from customer_vouchers where tenant_id = $1 and environment_id = $2 and customer_id = $3`,
		tenantID, envID, customerID)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("voucher of customer %q: %w", customerID, ErrNotFound)
	}
	return nil
}

// loadVouchers fills the vouchers of customers (indexed by id in at), each with the
// debits committed against it so far, in one query.
func loadVouchers(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, ids []string, at map[string]int, cs []Customer) error {
	rows, err := db.Query(ctx, `select v.customer_id, v.id, v.runes::text, v.expires_at, v.set_at, v.set_by,
			coalesce(d.runes, 0)::text, (v.runes - coalesce(d.runes, 0))::text
		from customer_vouchers v
		left join voucher_debit_totals d on d.customer_uid = v.customer_uid and d.voucher_id = v.id
		where v.tenant_id = $1 and v.environment_id = $2 and v.customer_id = any($3)`, tenantID, envID, ids)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var cid, debited string
		var runes, balance *string
		var by *uuid.UUID
		v := &CustomerVoucher{}
		if err := rows.Scan(&cid, &v.ID, &runes, &v.ExpiresAt, &v.SetAt, &by, &debited, &balance); err != nil {
			return err
		}
		v.Debited = json.Number(trimDecimal(debited))
		if runes != nil {
			r := json.Number(trimDecimal(*runes))
			v.Runes = &r
		}
		if balance != nil {
			b := json.Number(trimDecimal(*balance))
			v.Balance = &b
		}
		if by != nil {
			v.SetBy = by.String()
		}
		v.ExpiresAt, v.SetAt = v.ExpiresAt.UTC(), v.SetAt.UTC()
		cs[at[cid]].Voucher = v
	}
	return rows.Err()
}
