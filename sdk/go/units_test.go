package limitr_test

import (
	"strings"
	"testing"

	limitr "github.com/limitr/limitr/sdk/go"
)

// §3 units: quantity strings convert exactly into the credit's units (MB here, limit 5GB = 5000MB).
func TestAllowUnits(t *testing.T) {
	cases := []struct {
		name    string
		qty     string
		want    bool
		wantVal float64
	}{
		{"decimal GB", "3GB", true, 3000},           // §3 memory: GB = 1e9 bytes
		{"decimal MB", "500MB", true, 500},          // §3
		{"binary MiB", "10MiB", true, 10.48576},     // §3 / §17 V2: 10MiB = 10.48576MB exactly
		{"binary TiB over limit", "1TiB", false, 0}, // §3: 1TiB = 1099511.627776MB > 5000MB
		{"bytes", "2000000bytes", true, 2},          // §3 bytes suffix
		{"space allowed", "500 MB", true, 500},      // DESIGN difference 8: space between number and unit
		{"unitless is credit unit", "7", true, 7},   // §3 to_units: unitless = target unit
		{"exactly the limit", "5GB", true, 5000},    // §5 step 14 inclusive, exact
		{"one byte over the limit", "5000000001bytes", false, 0},
		{"bits", "8000000bits", true, 1}, // §3 bit = 1/8 byte
		{"KB", "1500KB", true, 1.5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, basePolicy)
			e.customer("u", "free")
			chk, err := e.p.CheckUnits(e.ctx, "u", "storage", tc.qty)
			if err != nil || chk != tc.want {
				t.Errorf("CheckUnits(%q) = (%v, %v), want %v", tc.qty, chk, err, tc.want)
			}
			got, err := e.p.AllowUnits(e.ctx, "u", "storage", tc.qty)
			if err != nil || got != tc.want {
				t.Fatalf("AllowUnits(%q) = (%v, %v), want %v", tc.qty, got, err, tc.want)
			}
			if v := e.value("u", "storage"); !approx(v, tc.wantVal) {
				t.Errorf("Value = %v MB, want %v", v, tc.wantVal)
			}
		})
	}
}

// §3: a plain float amount on a unit credit is in the credit's unit.
func TestAllowUnitlessAmountOnUnitCredit(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	if !e.allow("u", "storage", 3) {
		t.Fatal("denied")
	}
	if v := e.value("u", "storage"); v != 3 {
		t.Errorf("value %v, want 3 (MB)", v)
	}
	if l, _ := e.p.Limit(e.ctx, "u", "storage"); l != 5000 {
		t.Errorf("Limit = %v, want 5000 (5GB in MB)", l)
	}
}

// §3 / DESIGN difference 7, 8: invalid quantity strings are errors naming the string, and change nothing.
func TestAllowUnitsInvalid(t *testing.T) {
	cases := []struct {
		name, ent, qty string
	}{
		{"lowercase unit", "storage", "3gb"}, // §3: case-sensitive
		{"plural unit", "storage", "3 GBs"},  // unknown unit
		{"empty", "storage", ""},             // nothing to parse
		{"garbage", "storage", "lots"},
		{"cross category", "storage", "3s"},              // DESIGN 8: cross-category conversions are errors (named by units, not the string)
		{"units on unitless float credit", "api", "3MB"}, // DESIGN: units on a 'float' credit are an error
		{"units on unitless int credit", "tokens", "3MB"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, basePolicy)
			e.customer("u", "free")
			before := e.snapshotJSON("u")
			ok, err := e.p.AllowUnits(e.ctx, "u", tc.ent, tc.qty)
			if ok {
				t.Errorf("AllowUnits(%q) allowed", tc.qty)
			}
			wantErr(t, "AllowUnits("+tc.qty+")", err, limitr.ErrInvalidQuantity)
			if err != nil && tc.qty != "" && tc.qty != "3s" && !strings.Contains(err.Error(), tc.qty) {
				t.Errorf("error %q does not name the quantity %q", err, tc.qty)
			}
			_, err = e.p.CheckUnits(e.ctx, "u", tc.ent, tc.qty)
			wantErr(t, "CheckUnits("+tc.qty+")", err, limitr.ErrInvalidQuantity)
			if after := e.snapshotJSON("u"); after != before {
				t.Errorf("invalid quantity changed state")
			}
		})
	}
}
