package quantity

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/govalues/decimal"
)

func unit(t testing.TB, name string) Unit {
	t.Helper()
	u, ok := LookupUnit(name)
	if !ok {
		t.Fatalf("LookupUnit(%q) failed", name)
	}
	return u
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		in, value, unit string
	}{
		{"3GB", "3", "GB"},
		{"1TiB", "1", "TiB"},
		{"2000000bytes", "2000000", "B"},
		{"500MB", "500", "MB"},
		{"10MiB", "10", "MiB"},
		{"1day", "1", "day"},
		{"30days", "30", "day"},
		{"5min", "5", "min"},
		{"1_000_000", "1000000", ""},
		{"6e-6", "0.000006", ""},
		{"1e3", "1000", ""},
		{"1E3", "1000", ""},
		{"1e+3", "1000", ""},
		{"0.1", "0.1", ""},
		{"-1.5", "-1.5", ""},
		{"+2", "2", ""},
		{"-0", "0", ""},
		{"1.50GB", "1.50", "GB"},
		{"1_000.000_1", "1000.0001", ""},
		{"3 GB", "3", "GB"},
		{"3\t \tGB", "3", "GB"},
		{"  42ms \n", "42", "ms"},
		{"1EB", "1", "EB"},
		{"1exabyte", "1", "EB"},
		{"2e1EB", "20", "EB"},
		{"1e2exbibytes", "100", "EiB"},
		{"5m", "5", "m"},
		{"1 week", "1", "week"},
		{"1hrs", "1", "h"},
		{"1 seconds", "1", "s"},
		{"8bits", "8", "bit"},
		{"7 kibibytes", "7", "KiB"},
		{"9999999999999999999", "9999999999999999999", ""},
		{"0.0000000000000000001", "0.0000000000000000001", ""},
		{"0.10000000000000000000000000", "0.1", ""},
		{"1.5day", "1.5", "day"},
		{"2kg", "2", "kg"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			q, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if want := decimal.MustParse(tt.value); q.Value.Cmp(want) != 0 {
				t.Errorf("value = %s, want %s", q.Value, want)
			}
			if q.Unit != unit(t, tt.unit) || q.Unit.String() != tt.unit {
				t.Errorf("unit = %q, want %q", q.Unit, tt.unit)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct{ in, msg string }{
		{"", `quantity "": empty`},
		{"   ", `quantity "   ": empty`},
		{"3 GBs", `quantity "3 GBs": unknown unit "GBs"`},
		{"1__0", `quantity "1__0": malformed number`},
		{"_1", "malformed number"},
		{"1_", "malformed number"},
		{"1_.5", "malformed number"},
		{"1._5", "malformed number"},
		{".", "malformed number"},
		{".5", "malformed number"},
		{"5.", "malformed number"},
		{"1.2.3", "malformed number"},
		{"--1", "malformed number"},
		{"+-1", "malformed number"},
		{"- 1", "malformed number"},
		{"1e", `unknown unit "e"`},
		{"1e+", `unknown unit "e+"`},
		{"1e_3", `unknown unit "e_3"`},
		{"NaN", "malformed number"},
		{"Inf", "malformed number"},
		{"-Inf", "malformed number"},
		{"GB", "malformed number"},
		{"3gb", `unknown unit "gb"`},
		{"3Gb", `unknown unit "Gb"`},
		{"1K", `unknown unit "K"`},
		{"1ZB", `unknown unit "ZB"`},
		{"3 GB x", `unknown unit "GB x"`},
		{"3\nGB", "malformed number"},
		{"1e400", "out of range"},
		{"1e-400", "out of range"},
		{"99999999999999999999", "out of range"},
		{"1e19", "out of range"},
		{"1e-20", "not representable"},
		{"1.23456789012345678901", "not representable"},
		{"1" + strings.Repeat("0", 400), "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			q, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %v, want error", tt.in, q)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.in)) {
				t.Errorf("error %q, want it to contain %q and the input", err, tt.msg)
			}
		})
	}
}

func TestConvert(t *testing.T) {
	tests := []struct{ in, to, want string }{
		{"2GB", "MB", "2000"},
		{"2000MB", "GB", "2"},
		{"1502MB", "GB", "1.502"},
		{"1.502GB", "MB", "1502"},
		{"10MiB", "MB", "10.48576"},
		{"1TiB", "MB", "1099511.627776"},
		{"1day", "ms", "86400000"},
		{"30days", "ms", "2592000000"},
		{"5min", "ms", "300000"},
		{"1week", "days", "7"},
		{"7days", "week", "1"},
		{"2000000bytes", "MB", "2"},
		{"1bit", "B", "0.125"},
		{"1bit", "KiB", "0.0001220703125"},
		{"1KB", "KiB", "0.9765625"},
		{"1ms", "min", "0.0000166666666666667"}, // rounded half-even at 19 decimal places
		{"2ms", "min", "0.0000333333333333333"},
		{"1EiB", "B", "1152921504606846976"},
		{"1EB", "EiB", "0.8673617379884035472"},
		{"9EB", "B", "9000000000000000000"},
		{"20EB", "KB", "20000000000000000"}, // intermediate exceeds 19 digits, result does not
		{"1ns", "week", "0.0000000000000016534"},
		{"1.5km", "m", "1500"},
		{"-3 cm", "mm", "-30"},
		{"250mg", "g", "0.25"},
		{"5", "GB", "5"}, // unitless amount is already in the target unit
		{"5GB", "", "5"}, // unitless target keeps the number
		{"1.50GB", "GB", "1.50"},
		{"0KB", "B", "0"},
	}
	for _, tt := range tests {
		t.Run(tt.in+"->"+tt.to, func(t *testing.T) {
			q, err := Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			got, err := q.In(unit(t, tt.to))
			if err != nil {
				t.Fatalf("In(%s): %v", tt.to, err)
			}
			if want := decimal.MustParse(tt.want); got.Cmp(want) != 0 {
				t.Errorf("%s in %s = %s, want %s", tt.in, tt.to, got, want)
			}
		})
	}
}

func TestConvertErrors(t *testing.T) {
	q, _ := Parse("3GB")
	_, err := q.In(unit(t, "ms"))
	if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "GB") || !strings.Contains(err.Error(), "ms") {
		t.Errorf("GB->ms: %v", err)
	}
	_, err = Convert(decimal.MustParse("10"), unit(t, "EB"), unit(t, "bit"))
	if err == nil || errors.Is(err, ErrIncompatible) {
		t.Errorf("10EB->bit: want overflow error, got %v", err)
	}
}

func TestStringRoundTrip(t *testing.T) {
	for _, in := range []string{"3GB", "1.5day", "-0.000006", "1_000 KiB", "6e-6ms", "1.50 GB", "2e3 bits", "0", "9999999999999999999EB"} {
		q, err := Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(q.String())
		if err != nil || back != q {
			t.Errorf("%q -> %q -> %v, %v", in, q.String(), back, err)
		}
	}
	q, _ := Parse("1.5 days")
	if got := q.String(); got != "1.5day" {
		t.Errorf("String = %q, want 1.5day", got)
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"1day", 24 * time.Hour},
		{"5min", 5 * time.Minute},
		{"1500", 1500 * time.Millisecond},
		{"0.5", 500 * time.Microsecond},
		{"1.5s", 1500 * time.Millisecond},
		{"-2h", -2 * time.Hour},
		{"1week", 7 * 24 * time.Hour},
		{"3ns", 3},
		{"1.5us", 1500},
		{"9223372036854775807ns", time.Duration(1<<63 - 1)},
		{"-9223372036854775808ns", time.Duration(-1 << 63)},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
	bad := []struct {
		in   string
		want error
	}{
		{"3GB", ErrIncompatible},
		{"1m", ErrIncompatible},
		{"1.5ns", ErrInvalid},
		{"0.0000001", ErrInvalid},
		{"9223372036854775808ns", ErrInvalid},
		{"1000weeks", nil}, // fits: about 19 years
		{"100000weeks", ErrInvalid},
		{"abc", ErrInvalid},
	}
	for _, tt := range bad {
		_, err := ParseDuration(tt.in)
		if tt.want == nil {
			if err != nil {
				t.Errorf("ParseDuration(%q): %v", tt.in, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), fmt.Sprintf("%q", tt.in)) {
			t.Errorf("ParseDuration(%q) error = %v, want %v naming the input", tt.in, err, tt.want)
		}
	}
}

func TestLookupUnit(t *testing.T) {
	for alias, canon := range map[string]string{
		"B": "B", "byte": "B", "bytes": "B", "megabytes": "MB", "GiB": "GiB", "pebibyte": "PiB",
		"sec": "s", "hr": "h", "hours": "h", "nanoseconds": "ns", "microsecond": "us", "": "",
	} {
		if u := unit(t, alias); u.String() != canon {
			t.Errorf("LookupUnit(%q) = %q, want %q", alias, u, canon)
		}
	}
	if u := unit(t, "GB"); u.Dimension() != Memory || u.IsZero() || u.Factor().Cmp(decimal.MustParse("1e9")) != 0 {
		t.Errorf("GB = %+v", u)
	}
	if u := unit(t, ""); !u.IsZero() || u.Dimension() != None {
		t.Errorf("unitless = %+v", u)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"3GB", "1TiB", "2000000bytes", "500MB", "10MiB", "1day", "30days", "5min",
		"1_000_000", "6e-6", "1e3", "0.1", "3 GB", "-1.5day", "1EB", "1e", "1__0",
		"", ".", "--1", "NaN", "1e400", "1.23456789012345678901", "9999999999999999999EiB", "1ns",
	} {
		f.Add(s)
	}
	ms, _ := LookupUnit("ms")
	f.Fuzz(func(t *testing.T, s string) {
		quoted := fmt.Sprintf("%q", s)
		q, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), quoted) {
				t.Fatalf("Parse(%q): bad error %v", s, err)
			}
		} else {
			back, err := Parse(q.String())
			if err != nil || back.Unit != q.Unit || back.Value.Cmp(q.Value) != 0 {
				t.Fatalf("Parse(%q) = %q, re-parse = %v, %v", s, q, back, err)
			}
			// Only overflow may fail within time; every other dimension must be refused.
			_, err = q.In(ms)
			if incompatible := q.Unit.Dimension() != Time && !q.Unit.IsZero(); incompatible != errors.Is(err, ErrIncompatible) {
				t.Fatalf("%q in ms: %v", s, err)
			}
		}
		if _, err := ParseDuration(s); err != nil &&
			!(errors.Is(err, ErrInvalid) || errors.Is(err, ErrIncompatible)) || err != nil && !strings.Contains(err.Error(), quoted) {
			t.Fatalf("ParseDuration(%q): bad error %v", s, err)
		}
	})
}
