package customers

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/validation"
)

func TestVoucherFromMetadata(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	future := now.Add(30 * 24 * time.Hour)
	ms := future.UnixMilli()
	num := func(s string) *json.Number { n := json.Number(s); return &n }
	for _, tc := range []struct {
		name      string
		meta      map[string]any
		ok        bool
		runes     *json.Number
		expires   time.Time
		errPath   string // the field an error must name ("" = no error)
		errSubstr string
	}{
		{name: "no voucher key", meta: map[string]any{"plan": "x", MetaVoucherExpires: "2020-01-01T00:00:00Z"}},
		{name: "nil metadata", meta: nil},
		{name: "empty string", meta: map[string]any{MetaVoucher: " ", MetaVoucherExpires: "garbage"}},
		{name: "false", meta: map[string]any{MetaVoucher: false}},
		{name: "null", meta: map[string]any{MetaVoucher: nil}},
		{name: "rfc3339 without runes", meta: map[string]any{MetaVoucher: "VCH-1", MetaVoucherExpires: future.Format(time.RFC3339)},
			ok: true, expires: future},
		{name: "millis as float64", meta: map[string]any{MetaVoucher: true, MetaVoucherExpires: float64(ms), MetaVoucherRunes: 12.5},
			ok: true, expires: future, runes: num("12.5")},
		{name: "millis as json.Number, runes as string", meta: map[string]any{MetaVoucher: 1, MetaVoucherExpires: json.Number(strconv.FormatInt(ms, 10)), MetaVoucherRunes: "100.000001"},
			ok: true, expires: future, runes: num("100.000001")},
		{name: "millis as digit string", meta: map[string]any{MetaVoucher: "x", MetaVoucherExpires: strconv.FormatInt(ms, 10), MetaVoucherRunes: json.Number("0")},
			ok: true, expires: future, runes: num("0")},
		{name: "missing expiry", meta: map[string]any{MetaVoucher: "x"}, errPath: "metadata." + MetaVoucherExpires, errSubstr: "required"},
		{name: "past expiry", meta: map[string]any{MetaVoucher: "x", MetaVoucherExpires: "2025-06-01T00:00:00Z"},
			errPath: "metadata." + MetaVoucherExpires, errSubstr: "not in the future"},
		{name: "past millis", meta: map[string]any{MetaVoucher: "x", MetaVoucherExpires: float64(now.Add(-time.Hour).UnixMilli())},
			errPath: "metadata." + MetaVoucherExpires, errSubstr: "not in the future"},
		{name: "fractional millis", meta: map[string]any{MetaVoucher: "x", MetaVoucherExpires: 1.5},
			errPath: "metadata." + MetaVoucherExpires, errSubstr: "whole number"},
		{name: "bad timestamp", meta: map[string]any{MetaVoucher: "x", MetaVoucherExpires: "next tuesday"},
			errPath: "metadata." + MetaVoucherExpires, errSubstr: "RFC 3339"},
		{name: "negative runes", meta: map[string]any{MetaVoucher: "x", MetaVoucherExpires: future.Format(time.RFC3339), MetaVoucherRunes: -1.0},
			errPath: "metadata." + MetaVoucherRunes, errSubstr: ">= 0"},
		{name: "bad decimal", meta: map[string]any{MetaVoucher: "x", MetaVoucherExpires: future.Format(time.RFC3339), MetaVoucherRunes: "ten"},
			errPath: "metadata." + MetaVoucherRunes, errSubstr: "decimal"},
		{name: "exponent, exact", meta: map[string]any{MetaVoucher: "x", MetaVoucherExpires: future.Format(time.RFC3339), MetaVoucherRunes: "1e3"},
			ok: true, expires: future, runes: num("1000")},
		{name: "runes of a wrong type", meta: map[string]any{MetaVoucher: "x", MetaVoucherExpires: future.Format(time.RFC3339), MetaVoucherRunes: []any{1}},
			errPath: "metadata." + MetaVoucherRunes, errSubstr: "number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, ok, err := VoucherFromMetadata(tc.meta, now)
			if tc.errPath != "" {
				var ve *validation.Error
				if !errors.As(err, &ve) || len(ve.Fields) != 1 || ve.Fields[0].Path != tc.errPath || !strings.Contains(ve.Fields[0].Message, tc.errSubstr) {
					t.Fatalf("err = %v (%+v), want one field error at %s mentioning %q", err, ve, tc.errPath, tc.errSubstr)
				}
				if ok {
					t.Fatal("ok with an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			if got, _ := time.Parse(time.RFC3339Nano, in.ExpiresAt); !got.Equal(tc.expires) {
				t.Errorf("expires_at = %s, want %s", in.ExpiresAt, tc.expires)
			}
			switch {
			case tc.runes == nil && in.Runes != nil:
				t.Errorf("runes = %s, want none", *in.Runes)
			case tc.runes != nil && (in.Runes == nil || *in.Runes != *tc.runes):
				t.Errorf("runes = %v, want %s", in.Runes, *tc.runes)
			}
			// What the metadata form yields is a valid request.
			if err := in.prepareErr(now); err != nil {
				t.Errorf("the input does not validate: %v", err)
			}
		})
	}
}

func (in VoucherInput) prepareErr(now time.Time) error {
	_, err := in.prepare(now)
	return err
}

func TestVoucherInputValidate(t *testing.T) {
	now := time.Now()
	n := func(s string) *json.Number { v := json.Number(s); return &v }
	future := now.Add(time.Hour).UTC().Format(time.RFC3339)
	for _, tc := range []struct {
		in    VoucherInput
		paths []string
	}{
		{VoucherInput{ExpiresAt: future}, nil},
		{VoucherInput{Runes: n("0"), ExpiresAt: future}, nil},
		{VoucherInput{Runes: n("25.75"), ExpiresAt: future}, nil},
		{VoucherInput{Runes: n("-1"), ExpiresAt: future}, []string{"runes"}},
		{VoucherInput{Runes: n("1e2"), ExpiresAt: future}, []string{"runes"}},
		{VoucherInput{Runes: n("10")}, []string{"expires_at"}},
		{VoucherInput{ExpiresAt: "2020-01-01T00:00:00Z"}, []string{"expires_at"}},
		{VoucherInput{Runes: n("-2"), ExpiresAt: "yesterday"}, []string{"runes", "expires_at"}},
	} {
		err := tc.in.Validate()
		var ve *validation.Error
		if len(tc.paths) == 0 {
			if err != nil {
				t.Errorf("%+v: %v", tc.in, err)
			}
			continue
		}
		if !errors.As(err, &ve) || len(ve.Fields) != len(tc.paths) {
			t.Errorf("%+v: err = %v, want fields %v", tc.in, err, tc.paths)
			continue
		}
		for i, p := range tc.paths {
			if ve.Fields[i].Path != p {
				t.Errorf("%+v: field %d = %s, want %s", tc.in, i, ve.Fields[i].Path, p)
			}
		}
	}
}
