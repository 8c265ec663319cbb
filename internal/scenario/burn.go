package scenario

import (
	"errors"
	"fmt"
	"math"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// Step kinds of the burn-rate reads and of vouchers.
func init() {
	Define[expectRate]("expect_rate", Kind{Assertion: true, Doc: "consumption rate, units per millisecond (to 1e-6 relative)"})
	Define[expectAcceleration]("expect_acceleration", Kind{Assertion: true, Doc: "change of the rate, units per ms² (to 1e-6 relative)"})
	Define[expectExhaustion]("expect_projected_exhaustion", Kind{Assertion: true, Doc: "when the limit is reached at the current rate: in (a duration from now, to the millisecond) or never"})

	Define[setVoucher]("set_voucher", Kind{Doc: "give a customer a voucher: runes (omit for expiry only) and expires_in or expires_at"})
	Define[removeVoucher]("remove_voucher", Kind{Doc: "take a customer's voucher away"})
	Define[expectVoucher]("expect_voucher", Kind{Assertion: true, Doc: "a customer's voucher balance (runes), expiry_only, or none: true"})
}

// burnTolerance is how close a burn-rate read must come: its history keeps amounts in
// single precision.
const burnTolerance = 1e-6

func burnMatch(what, subject string, want Number, got float64, err error) (any, error) {
	if err != nil {
		return nil, &Mismatch{Reason: what + ": unexpected error", Expected: formatFloat(want.Value), Got: "error " + quote(err.Error())}
	}
	if math.Abs(want.Value-got) > burnTolerance*max(1e-12, math.Abs(want.Value), math.Abs(got)) {
		return got, &Mismatch{Reason: fmt.Sprintf("%s of %s differs", what, subject), Expected: formatFloat(want.Value), Got: formatFloat(got)}
	}
	return got, nil
}

type burnRead struct {
	target `yaml:",inline"`
	Equals Number `yaml:"equals"`
}

func (a *burnRead) check() error {
	err := a.target.check()
	if !a.Equals.Set {
		err = errors.Join(err, &fieldError{Field: "equals", Err: errors.New("required")})
	}
	return err
}

type expectRate struct {
	burnRead `yaml:",inline"`
}

func (a *expectRate) Run(env *Env) (any, error) {
	v, err := env.Policy.Rate(env.Ctx, a.Customer, a.Entitlement)
	return burnMatch("rate", a.Customer+"/"+a.Entitlement, a.Equals, v, err)
}

type expectAcceleration struct {
	burnRead `yaml:",inline"`
}

func (a *expectAcceleration) Run(env *Env) (any, error) {
	v, err := env.Policy.Acceleration(env.Ctx, a.Customer, a.Entitlement)
	return burnMatch("acceleration", a.Customer+"/"+a.Entitlement, a.Equals, v, err)
}

// expectExhaustion is `{customer, entitlement, in: 266ms}` or `never: true`, with
// smoothed and without_grants.
type expectExhaustion struct {
	target        `yaml:",inline"`
	In            Duration `yaml:"in"`
	Never         bool     `yaml:"never"`
	Smoothed      bool     `yaml:"smoothed"`
	WithoutGrants bool     `yaml:"without_grants"`
}

func (a *expectExhaustion) check() error {
	err := a.target.check()
	if a.In.Set == a.Never {
		err = errors.Join(err, &fieldError{Field: "in", Err: errors.New("give exactly one of in (a duration from now) or never: true")})
	}
	return err
}

func (a *expectExhaustion) Run(env *Env) (any, error) {
	var opts []limitr.ReadOption
	if a.Smoothed {
		opts = append(opts, limitr.Smoothed())
	}
	if a.WithoutGrants {
		opts = append(opts, limitr.WithoutGrants())
	}
	at, err := env.Policy.ProjectedExhaustion(env.Ctx, a.Customer, a.Entitlement, opts...)
	want := "never"
	if !a.Never {
		want = "in " + a.In.D.String()
	}
	if err != nil {
		return nil, &Mismatch{Reason: "projected exhaustion: unexpected error", Expected: want, Got: "error " + quote(err.Error())}
	}
	got := "never"
	if !at.IsZero() {
		got = "in " + at.Sub(env.Clock.Now()).Round(time.Millisecond).String()
	}
	if got != want && !(a.In.Set && !at.IsZero() && at.Sub(env.Clock.Now().Add(a.In.D)).Abs() <= time.Millisecond) {
		return nil, &Mismatch{Reason: fmt.Sprintf("projected exhaustion of %s/%s differs", a.Customer, a.Entitlement), Expected: want, Got: got}
	}
	return nil, nil
}

// --- vouchers ----------------------------------------------------------------

type setVoucher struct {
	Customer  string   `yaml:"customer"`
	ID        string   `yaml:"id"`
	Runes     Number   `yaml:"runes"`
	ExpiresIn Duration `yaml:"expires_in"`
	ExpiresAt Time     `yaml:"expires_at"`
}

func (a *setVoucher) check() error {
	err := required("customer", a.Customer)
	if a.ExpiresIn.Set == a.ExpiresAt.Set {
		err = errors.Join(err, &fieldError{Field: "expires_in", Err: errors.New("give exactly one of expires_in (a duration from now) or expires_at")})
	}
	return err
}

func (a *setVoucher) Run(env *Env) (any, error) {
	v := limitr.Voucher{ID: a.ID, Runes: a.Runes.Value, ExpiryOnly: !a.Runes.Set, ExpiresAt: a.ExpiresAt.Time}
	if a.ExpiresIn.Set {
		v.ExpiresAt = env.Clock.Now().Add(a.ExpiresIn.D)
	}
	return nil, env.Policy.SetCustomerVoucher(env.Ctx, a.Customer, v)
}

type removeVoucher struct {
	Customer string `yaml:"customer"`
}

func (a *removeVoucher) check() error { return required("customer", a.Customer) }

func (a *removeVoucher) Run(env *Env) (any, error) {
	return nil, env.Policy.RemoveCustomerVoucher(env.Ctx, a.Customer)
}

type expectVoucher struct {
	Customer   string `yaml:"customer"`
	Runes      Number `yaml:"runes"`
	ExpiryOnly bool   `yaml:"expiry_only"`
	None       bool   `yaml:"none"`
}

func (a *expectVoucher) check() error {
	err := required("customer", a.Customer)
	if a.None && (a.Runes.Set || a.ExpiryOnly) {
		err = errors.Join(err, &fieldError{Field: "none", Err: errors.New("none: true expects no voucher; drop runes and expiry_only")})
	}
	return err
}

func (a *expectVoucher) Run(env *Env) (any, error) {
	v, err := env.Policy.CustomerVoucher(env.Ctx, a.Customer)
	switch {
	case a.None && errors.Is(err, limitr.ErrNoVoucher):
		return nil, nil
	case a.None && err == nil:
		return nil, &Mismatch{Reason: "expected no voucher", Expected: "none", Got: fmt.Sprintf("a voucher of %s runes", formatFloat(v.Runes))}
	case err != nil:
		return nil, &Mismatch{Reason: "voucher: unexpected error", Expected: "a voucher", Got: "error " + quote(err.Error())}
	case a.ExpiryOnly != v.ExpiryOnly:
		return nil, &Mismatch{Reason: "voucher kind differs", Expected: fmt.Sprintf("expiry_only: %v", a.ExpiryOnly), Got: fmt.Sprintf("expiry_only: %v", v.ExpiryOnly)}
	case a.Runes.Set && !NumbersMatch(a.Runes.Value, v.Runes):
		return v.Runes, &Mismatch{Reason: "voucher balance of " + a.Customer + " differs", Expected: formatFloat(a.Runes.Value), Got: formatFloat(v.Runes)}
	}
	return nil, nil
}
