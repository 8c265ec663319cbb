package usage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// strictDecode is what DecodeBatch did before decodeFast: encoding/json, strictly.
func strictDecode(raw []byte) (*wire.UsageBatch, error) {
	var b wire.UsageBatch
	if err := validation.DecodeJSON(raw, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// FuzzDecodeFast: whatever decodeFast accepts, encoding/json accepts too, with the
// same batch. (What it refuses, encoding/json decides.)
func FuzzDecodeFast(f *testing.F) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 4 {
		raw, _ := json.Marshal(randomBatch(rng, 3))
		f.Add(raw)
	}
	for _, s := range fallbackBodies {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"instance_id":null,"sequence":null,"sent_at":null,"deltas":[null,{"customer_created_at":null}],"events":null,"grant_draws":[{"units":null}]}`))
	f.Add([]byte(`{"instance_id":"a","sequence":1,"cap_uses":[null,{"customer":"c","cap_key":"k","period_start":"2026-01-01T00:00:00Z","units":"-1.5","customer_created_at":null}]}`))
	f.Add([]byte(`{"instance_id":"a","sequence":-9223372036854775808,"deltas":[{"calls":9223372036854775807}]}`))
	f.Add([]byte(`{"deltas":[{"customer":"caf\xc3\xa9","units":"\u00e9\ud83d\ude00"}],"events":[{"allowed":true,"at":"2026-01-01T00:00:00+01:00"}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		fast, ok := decodeFast(raw)
		if !ok {
			return
		}
		want, err := strictDecode(raw)
		if err != nil {
			t.Fatalf("decodeFast accepted %q, encoding/json refused it: %v", raw, err)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("%q decodes to\n%#v\nencoding/json:\n%#v", raw, fast, want)
		}
	})
}

// Batches as SDKs send them (json.Encoder: HTML-escaped, a trailing newline) take the
// fast path, and decode to what encoding/json makes of them.
func TestDecodeFastTakesSDKBatches(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		b := randomBatch(rng, rng.IntN(20))
		var buf bytes.Buffer
		if err := json.NewEncoder(&buf).Encode(b); err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 { // pretty-printed: whitespace everywhere
			var ind bytes.Buffer
			if err := json.Indent(&ind, buf.Bytes(), " ", "\t"); err != nil {
				t.Fatal(err)
			}
			buf = ind
		}
		fast, ok := decodeFast(buf.Bytes())
		if !ok {
			t.Fatalf("batch %d took the slow path: %s", i, buf.Bytes())
		}
		want, err := strictDecode(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fast, want) {
			t.Fatalf("batch %d decodes to\n%#v\nencoding/json:\n%#v", i, fast, want)
		}
	}
}

// Every field of the batch's wire types is decoded by the fast path: a field added to
// wire.UsageBatch and its records without decodeFast would send every batch to the
// slow path.
func TestDecodeFastKnowsEveryField(t *testing.T) {
	b := randomBatch(rand.New(rand.NewPCG(3, 4)), 1)
	b.Deltas[0].GrantCovered = "1"
	b.Events[0].Caller, b.Events[0].Allowed = "u", true
	b.Leased = true
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	b.Deltas[0].CustomerCreatedAt, b.GrantDraws[0].CustomerCreatedAt, b.VoucherDebits[0].CustomerCreatedAt = &created, &created, &created
	b.CapUses[0].CustomerCreatedAt = &created
	for _, v := range []any{b, b.Deltas[0], b.Events[0], b.GrantDraws[0], b.VoucherDebits[0], b.CapUses[0]} {
		rv := reflect.ValueOf(v)
		for i := range rv.NumField() {
			if rv.Field(i).IsZero() {
				t.Fatalf("%s.%s is not set by this test: set it, and decode it in decodeFast", rv.Type().Name(), rv.Type().Field(i).Name)
			}
		}
	}
	raw, _ := json.Marshal(b)
	fast, ok := decodeFast(raw)
	if !ok {
		t.Fatalf("took the slow path: %s", raw)
	}
	if !reflect.DeepEqual(*fast, b) {
		t.Fatalf("decoded\n%#v\nwant\n%#v", *fast, b)
	}
}

// JSON that encoding/json accepts but decodeFast leaves to it, and malformed or
// invalid JSON: DecodeBatch answers exactly what encoding/json does.
var fallbackBodies = []string{
	`{"Instance_ID":"a","sequence":1}`,                    // keys match case-insensitively
	`{"instance_id":"a","instance_id":"b","sequence":1}`,  // the last one wins
	`{"instance\u005fid":"a","sequence":1}`,               // an escaped key
	`{"instance_id":"a","sequence":1e0}`,                  // an integer with an exponent
	`{"instance_id":"a","sequence":1.0}`,                  // … or a fraction
	`{"instance_id":"a","sequence":99999999999999999999}`, // out of range
	`{"instance_id":"a","sequence":1,"deltas":[{"customer":"a","customer":"b"}]}`,
	`{"instance_id":"a","sequence":1,"deltas":[{"units":1.5}]}`,
	`{"instance_id":"a","sequence":1,"deltas":[{"period_start":"2026-01-01"}]}`,
	`{"instance_id":"a","sequence":1,"deltas":[{"nope":1}]}`,
	`{"instance_id":"a","sequence":1,"events":[{"allowed":"yes"}]}`,
	`{"instance_id":"a","sequence":1} {}`,
	`{"instance_id":"a","sequence":1`,
	`{"instance_id":"a\x01","sequence":1}`,
	`{"instance_id":"a\xff","sequence":1}`,
	`{"instance_id":"\ud800","sequence":01}`,
	`{"instance_id":"a","sequence":1,"events":[{"allowed":truex}]}`,
	`{"instance_id":"a","sequence":1,"cap_uses":[{"cap_key":"a","cap_key":"b"}]}`,
	`{"instance_id":"a","sequence":1,"cap_uses":[{"units":2}]}`,
	`{"instance_id":"a","sequence":1,"cap_uses":[{"capkey":"k"}]}`,
	`{"instance_id":"a","sequence":1,"cap_uses":{}}`,
	`null`,
	`[]`,
	"\ufeff{}",
}

func TestDecodeBatchFallsBackToEncodingJSON(t *testing.T) {
	for _, body := range fallbackBodies {
		got, err := DecodeBatch([]byte(body))
		want, wantErr := strictDecode([]byte(body))
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: DecodeBatch = %+v, %v; encoding/json = %+v, %v", body, got, err, want, wantErr)
		}
		var ve *validation.Error
		if errors.As(wantErr, &ve) && !errors.As(err, &ve) {
			t.Errorf("%s: %v is not a *validation.Error", body, err)
		}
	}
}

// randomBatch is a batch with n records of each kind, with the texts SDKs may send:
// HTML characters (escaped by encoding/json), non-ASCII names and offsets.
func randomBatch(rng *rand.Rand, n int) wire.UsageBatch {
	names := []string{"alice", "org-42", "bob@example.com", "café", "<a&b>", "日本", "line\u2028sep", `q"uote\`}
	pick := func() string { return names[rng.IntN(len(names))] }
	dec := func() string {
		return []string{"0", "12.5", "-3", "0.0000375", "1000000", "2.50"}[rng.IntN(6)]
	}
	at := func() time.Time {
		t := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.Int64N(int64(90 * 24 * time.Hour))))
		if rng.IntN(3) == 0 {
			t = t.In(time.FixedZone("", 3600*(rng.IntN(25)-12)))
		}
		return t
	}
	ptr := func() *time.Time {
		if rng.IntN(2) == 0 {
			return nil
		}
		t := at().Truncate(time.Millisecond)
		return &t
	}
	b := wire.UsageBatch{InstanceID: "web-1", Sequence: 1 + rng.Int64N(1<<40), SentAt: at(), PolicyVersion: rng.IntN(100), Leased: rng.IntN(2) == 0}
	for range n {
		gc := ""
		if rng.IntN(2) == 0 {
			gc = dec()
		}
		b.Deltas = append(b.Deltas, wire.UsageDelta{Customer: pick(), Entitlement: "ai-chat-input", Credit: pick(), PeriodStart: at(),
			Units: dec(), Overhead: dec(), Price: dec(), Calls: rng.Int64N(1000), GrantCovered: gc, CustomerCreatedAt: ptr()})
		b.Events = append(b.Events, wire.UsageEvent{ID: fmt.Sprint(rng.Int()), Customer: pick(), Caller: pick(), Entitlement: "e",
			Units: dec(), Overhead: dec(), Allowed: rng.IntN(2) == 0, At: at()})
		b.GrantDraws = append(b.GrantDraws, wire.GrantDraw{Customer: pick(), GrantID: "g", PeriodStart: at(), Units: dec(), CustomerCreatedAt: ptr()})
		b.VoucherDebits = append(b.VoucherDebits, wire.VoucherDebit{Customer: pick(), VoucherID: "v", Runes: dec(), CustomerCreatedAt: ptr()})
		b.CapUses = append(b.CapUses, wire.CapUse{Customer: pick(), CapKey: "cap_" + pick(), PeriodStart: at(), Units: dec(), CustomerCreatedAt: ptr()})
	}
	return b
}
