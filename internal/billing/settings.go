package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/billing/money"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
)

// maxSellerBytes bounds the seller shown on invoices (name, address, email, tax id).
const maxSellerBytes = 16 << 10

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,15}$`)

// Settings are an environment's billing settings.
type Settings struct {
	Currency      string          `json:"currency"`
	RuneRate      string          `json:"rune_rate"`
	GracePeriod   string          `json:"grace_period"`
	DaysUntilDue  int             `json:"days_until_due"`
	InvoicePrefix string          `json:"invoice_prefix"`
	Seller        json.RawMessage `json:"seller"`
	UpdatedAt     time.Time       `json:"updated_at"`

	runeRate num.Dec
	Grace    time.Duration `json:"-"`
}

// DefaultSettings are an environment's settings until it sets its own.
func DefaultSettings() Settings {
	return Settings{Currency: "USD", RuneRate: "1", GracePeriod: "1h0m0s", DaysUntilDue: 30, InvoicePrefix: "INV",
		Seller: json.RawMessage(`{}`), runeRate: num.One, Grace: time.Hour}
}

// Settings reads an environment's billing settings (the defaults until set).
func (s *Service) Settings(ctx context.Context, env store.Environment) (Settings, error) {
	return loadSettings(ctx, s.pool, env)
}

func loadSettings(ctx context.Context, db store.DBTX, env store.Environment) (Settings, error) {
	return scanSettings(db.QueryRow(ctx, settingsSQL, env.TenantID, env.ID))
}

// settingsSQL reads an environment's settings ($1 tenant, $2 environment) for
// scanSettings.
const settingsSQL = `select currency, rune_rate::text, grace_seconds, days_until_due, invoice_prefix, seller, updated_at
	from billing_settings where tenant_id = $1 and environment_id = $2`

func scanSettings(row pgx.Row) (Settings, error) {
	set := DefaultSettings()
	var rate string
	var grace int64
	err := row.Scan(&set.Currency, &rate, &grace, &set.DaysUntilDue, &set.InvoicePrefix, &set.Seller, &set.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return set, nil
	}
	if err != nil {
		return Settings{}, fmt.Errorf("billing: settings: %w", err)
	}
	if set.runeRate, err = num.Parse(rate); err != nil {
		return Settings{}, fmt.Errorf("billing: settings: rune_rate: %w", err)
	}
	set.RuneRate = set.runeRate.Trim(0).String()
	set.Grace = time.Duration(grace) * time.Second
	set.GracePeriod = set.Grace.String()
	return set, nil
}

// SettingsInput replaces an environment's billing settings; absent fields take the
// defaults.
type SettingsInput struct {
	Currency      *string         `json:"currency,omitempty"`
	RuneRate      *string         `json:"rune_rate,omitempty"`
	GracePeriod   *string         `json:"grace_period,omitempty"`
	DaysUntilDue  *int            `json:"days_until_due,omitempty"`
	InvoicePrefix *string         `json:"invoice_prefix,omitempty"`
	Seller        json.RawMessage `json:"seller,omitempty"`
}

// Validate checks every field.
func (in SettingsInput) Validate() error {
	_, err := in.prepare()
	return err
}

func (in SettingsInput) prepare() (Settings, error) {
	set := DefaultSettings()
	var errs validation.Errors
	if in.Currency != nil {
		c, err := money.Normalize(*in.Currency)
		if err != nil {
			errs.Add("currency", "must be an ISO 4217 currency code, like USD or EUR")
		}
		set.Currency = c
	}
	if in.RuneRate != nil {
		r, err := num.Parse(*in.RuneRate)
		switch {
		case err != nil:
			errs.Add("rune_rate", "must be a decimal string, like \"1\" or \"0.92\"")
		case !r.IsPos():
			errs.Add("rune_rate", "must be greater than 0")
		default:
			set.runeRate, set.RuneRate = r, r.Trim(0).String()
		}
	}
	if in.GracePeriod != nil {
		g, err := time.ParseDuration(*in.GracePeriod)
		switch {
		case err != nil:
			errs.Add("grace_period", "must be a duration, like \"1h\" or \"30m\"")
		case g < 0 || g > 31*24*time.Hour:
			errs.Add("grace_period", "must be between 0 and 744h")
		default:
			set.Grace, set.GracePeriod = g.Truncate(time.Second), g.Truncate(time.Second).String()
		}
	}
	if in.DaysUntilDue != nil {
		if *in.DaysUntilDue < 0 || *in.DaysUntilDue > 365 {
			errs.Add("days_until_due", "must be between 0 and 365")
		}
		set.DaysUntilDue = *in.DaysUntilDue
	}
	if in.InvoicePrefix != nil {
		set.InvoicePrefix = *in.InvoicePrefix
		if !prefixRE.MatchString(set.InvoicePrefix) {
			errs.Add("invoice_prefix", "must be 1 to 16 letters, digits or dashes, starting with a letter or digit")
		}
	}
	if in.Seller != nil {
		seller, fe := validation.JSONObject("seller", in.Seller, maxSellerBytes)
		errs.AddField(fe)
		set.Seller = seller
	}
	return set, errs.Err("invalid billing settings")
}

// PutSettings replaces an environment's billing settings.
func (s *Service) PutSettings(ctx context.Context, env store.Environment, in SettingsInput) (Settings, error) {
	set, err := in.prepare()
	if err != nil {
		return Settings{}, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		before, err := loadSettings(ctx, tx, env)
		if err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `insert into billing_settings (tenant_id, environment_id, currency, rune_rate, grace_seconds, days_until_due, invoice_prefix, seller)
			values ($1, $2, $3, $4::numeric, $5, $6, $7, $8)
			on conflict (tenant_id, environment_id) do update set currency = excluded.currency, rune_rate = excluded.rune_rate,
			  grace_seconds = excluded.grace_seconds, days_until_due = excluded.days_until_due, invoice_prefix = excluded.invoice_prefix,
			  seller = excluded.seller, updated_at = now(), revision = billing_settings.revision + 1
			returning updated_at`,
			env.TenantID, env.ID, set.Currency, set.RuneRate, int64(set.Grace/time.Second), set.DaysUntilDue, set.InvoicePrefix, []byte(set.Seller)).
			Scan(&set.UpdatedAt)
		if err != nil {
			return fmt.Errorf("billing: save settings: %w", err)
		}
		return s.record(ctx, tx, env, "billing.settings", "billing_settings", env.Name, before, set)
	})
	return set, err
}
