package customers

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/limitr/limitr/internal/validation"
)

// Cap inputs without a published policy: every problem names its field; rune and usd
// caps are valid, other credits need the policy to define them.
func TestCapInputPrepare(t *testing.T) {
	n := func(s string) *json.Number { v := json.Number(s); return &v }
	str := func(s string) *string { return &s }
	for _, tc := range []struct {
		id    string
		in    CapInput
		paths []string
	}{
		{"monthly", CapInput{Value: n("100.5")}, nil},
		{"monthly", CapInput{Value: n("0"), Credit: "usd", ResetInc: "30days", ExpiresAt: str("2030-01-01T00:00:00Z")}, nil},
		{"monthly", CapInput{Value: n("1"), ResetSch: "monthly:1", Scope: []string{"a"}, SharedWith: []string{"b"}}, nil},
		{strings.Repeat("k", MaxCapIDLength), CapInput{Value: n("1")}, nil},
		{"monthly", CapInput{}, []string{"value"}},
		{"monthly", CapInput{Value: n("-1")}, []string{"value"}},
		{"monthly", CapInput{Value: n("1e3")}, []string{"value"}},
		{"monthly", CapInput{Value: n("1"), Credit: "gold"}, []string{"credit"}},
		{"monthly", CapInput{Value: n("1"), ResetInc: "soon"}, []string{"reset_inc"}},
		{"monthly", CapInput{Value: n("1"), ResetInc: "-1day"}, []string{"reset_inc"}},
		{"monthly", CapInput{Value: n("1"), ResetSch: "fortnightly"}, []string{"reset_sch"}},
		{"monthly", CapInput{Value: n("1"), ResetInc: "1day", ResetSch: "monthly:1"}, []string{"reset_sch"}},
		{"monthly", CapInput{Value: n("1"), ExpiresAt: str("soon")}, []string{"expires_at"}},
		{"monthly", CapInput{Value: n("1"), Scope: []string{""}}, []string{"scope[0]"}},
		{"", CapInput{Value: n("1")}, []string{"cap"}},
		{strings.Repeat("k", MaxCapIDLength+1), CapInput{Value: n("1")}, []string{"cap"}},
		{"a/b", CapInput{Value: n("1")}, []string{"cap"}},
		{"", CapInput{Value: n("-1"), Credit: "gold", ResetInc: "x"}, []string{"cap", "credit", "value", "reset_inc"}},
	} {
		spec, err := tc.in.prepare(tc.id, nil)
		if len(tc.paths) == 0 {
			if err != nil {
				t.Errorf("%q %+v: %v", tc.id, tc.in, err)
			} else if spec.row.Credit == "" || spec.row.ID != tc.id {
				t.Errorf("%q %+v: spec %+v", tc.id, tc.in, spec.row)
			}
			continue
		}
		var ve *validation.Error
		if !errors.As(err, &ve) || len(ve.Fields) != len(tc.paths) {
			t.Errorf("%q %+v: err = %v, want fields %v", tc.id, tc.in, err, tc.paths)
			continue
		}
		for i, p := range tc.paths {
			if ve.Fields[i].Path != p {
				t.Errorf("%q %+v: field %d = %s, want %s", tc.id, tc.in, i, ve.Fields[i].Path, p)
			}
		}
	}
	// A reset_inc or reset_sch makes the cap reset; the credit defaults to rune.
	spec, err := CapInput{Value: n("5"), ResetSch: "weekly:mon"}.prepare("c", nil)
	if err != nil || !spec.row.Config.Resets || spec.row.Credit != "rune" || spec.row.Value.String() != "5" {
		t.Fatalf("spec %+v, %v", spec.row, err)
	}
}
