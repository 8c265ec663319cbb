package usage

import (
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/limitr/limitr/internal/wire"
)

// decodeFast decodes a usage batch in the form SDKs write it, without reflection:
// encoding/json took a third of the API's CPU per batch, scanning every byte twice and
// allocating every string anew. It accepts a subset of what the strict decoder
// (validation.DecodeJSON) accepts and yields the same batch for it: each key spelled
// exactly as the wire tags and at most once per object, integers without a
// fraction or exponent that fit, strings and RFC 3339 times as encoding/json reads
// them. Anything else (malformed, unknown or case-folded keys, duplicates, …) answers
// false, and the strict decoder decides, with its errors.
func decodeFast(raw []byte) (*wire.UsageBatch, bool) {
	s := &scanner{data: raw, names: make(map[string]string, len(raw)/bytesPerName)}
	var b wire.UsageBatch
	s.ws()
	if !s.object(func(key []byte) (int, bool) { return s.batchField(&b, key) }) {
		return nil, false
	}
	s.ws()
	return &b, s.i == len(s.data)
}

// bytesPerName sizes the names map up front: about one distinct name per this many
// bytes of a batch (a delta is about 250 bytes, and a customer has a delta per meter).
const bytesPerName = 512

// batchField reads the value of the batch's field key; it answers the field's number
// (to find repeated keys) and whether the value was read.
func (s *scanner) batchField(b *wire.UsageBatch, key []byte) (int, bool) {
	switch string(key) {
	case "instance_id":
		return 0, s.name(&b.InstanceID)
	case "sequence":
		return 1, s.int64(&b.Sequence)
	case "sent_at":
		return 2, s.time(&b.SentAt)
	case "policy_version":
		var v int64
		ok := s.int64(&v)
		b.PolicyVersion = int(v)
		return 3, ok && int64(b.PolicyVersion) == v
	case "deltas":
		return 4, list(s, &b.Deltas, s.delta)
	case "events":
		return 5, list(s, &b.Events, s.event)
	case "grant_draws":
		return 6, list(s, &b.GrantDraws, s.grantDraw)
	case "voucher_debits":
		return 7, list(s, &b.VoucherDebits, s.voucherDebit)
	case "leased":
		return 8, s.bool(&b.Leased)
	case "cap_uses":
		return 9, list(s, &b.CapUses, s.capUse)
	}
	return 0, false
}

func (s *scanner) delta(d *wire.UsageDelta) bool {
	return s.object(func(key []byte) (int, bool) {
		switch string(key) {
		case "customer":
			return 0, s.name(&d.Customer)
		case "entitlement":
			return 1, s.name(&d.Entitlement)
		case "credit":
			return 2, s.name(&d.Credit)
		case "period_start":
			return 3, s.time(&d.PeriodStart)
		case "units":
			return 4, s.str(&d.Units)
		case "overhead":
			return 5, s.str(&d.Overhead)
		case "price":
			return 6, s.str(&d.Price)
		case "calls":
			return 7, s.int64(&d.Calls)
		case "grant_covered":
			return 8, s.str(&d.GrantCovered)
		case "customer_created_at":
			return 9, s.timePtr(&d.CustomerCreatedAt)
		}
		return 0, false
	})
}

func (s *scanner) event(e *wire.UsageEvent) bool {
	return s.object(func(key []byte) (int, bool) {
		switch string(key) {
		case "id":
			return 0, s.str(&e.ID)
		case "customer":
			return 1, s.name(&e.Customer)
		case "caller":
			return 2, s.name(&e.Caller)
		case "entitlement":
			return 3, s.name(&e.Entitlement)
		case "units":
			return 4, s.str(&e.Units)
		case "overhead":
			return 5, s.str(&e.Overhead)
		case "allowed":
			return 6, s.bool(&e.Allowed)
		case "at":
			return 7, s.time(&e.At)
		}
		return 0, false
	})
}

func (s *scanner) grantDraw(d *wire.GrantDraw) bool {
	return s.object(func(key []byte) (int, bool) {
		switch string(key) {
		case "customer":
			return 0, s.name(&d.Customer)
		case "grant_id":
			return 1, s.name(&d.GrantID)
		case "period_start":
			return 2, s.time(&d.PeriodStart)
		case "units":
			return 3, s.str(&d.Units)
		case "customer_created_at":
			return 4, s.timePtr(&d.CustomerCreatedAt)
		}
		return 0, false
	})
}

func (s *scanner) voucherDebit(d *wire.VoucherDebit) bool {
	return s.object(func(key []byte) (int, bool) {
		switch string(key) {
		case "customer":
			return 0, s.name(&d.Customer)
		case "voucher_id":
			return 1, s.name(&d.VoucherID)
		case "runes":
			return 2, s.str(&d.Runes)
		case "customer_created_at":
			return 3, s.timePtr(&d.CustomerCreatedAt)
		}
		return 0, false
	})
}

func (s *scanner) capUse(u *wire.CapUse) bool {
	return s.object(func(key []byte) (int, bool) {
		switch string(key) {
		case "customer":
			return 0, s.name(&u.Customer)
		case "cap_key":
			return 1, s.name(&u.CapKey)
		case "period_start":
			return 2, s.time(&u.PeriodStart)
		case "units":
			return 3, s.str(&u.Units)
		case "customer_created_at":
			return 4, s.timePtr(&u.CustomerCreatedAt)
		}
		return 0, false
	})
}

// scanner reads JSON from data at i.
type scanner struct {
	data []byte
	i    int
	// names interns the batch's names (customers, entitlements, credits, …): a batch
	// repeats a few of them in every record.
	names map[string]string
}

// ws skips JSON whitespace.
func (s *scanner) ws() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// eat consumes c if it is next.
func (s *scanner) eat(c byte) bool {
	if s.i < len(s.data) && s.data[s.i] == c {
		s.i++
		return true
	}
	return false
}

// object reads an object whose keys are plain strings, each read by field, which
// answers the key's field number (below 64); a repeated field fails.
func (s *scanner) object(field func(key []byte) (int, bool)) bool {
	if !s.eat('{') {
		return false
	}
	var seen uint64
	s.ws()
	if s.eat('}') {
		return true
	}
	for {
		key, ok := s.plainString()
		if !ok {
			return false
		}
		s.ws()
		if !s.eat(':') {
			return false
		}
		s.ws()
		n, ok := field(key)
		if !ok || seen&(1<<n) != 0 {
			return false
		}
		seen |= 1 << n
		s.ws()
		if s.eat('}') {
			return true
		}
		if !s.eat(',') {
			return false
		}
		s.ws()
	}
}

// list reads an array of objects into *out, each element read by elem. An empty
// array is an empty slice, not nil, as encoding/json makes it; null is nil, and a null
// element a zero one.
func list[T any](s *scanner, out *[]T, elem func(*T) bool) bool {
	if s.null() {
		return true
	}
	if !s.eat('[') {
		return false
	}
	v := []T{}
	s.ws()
	if s.eat(']') {
		*out = v
		return true
	}
	for {
		var zero T
		v = append(v, zero)
		if !s.null() && !elem(&v[len(v)-1]) {
			return false
		}
		s.ws()
		if s.eat(']') {
			*out = v
			return true
		}
		if !s.eat(',') {
			return false
		}
		s.ws()
	}
}

// stringToken reads a string token, quotes included; plain is true when its text is
// the bytes between the quotes: no escapes, and valid UTF-8 (encoding/json replaces
// invalid bytes).
func (s *scanner) stringToken() (tok []byte, plain, ok bool) {
	if !s.eat('"') {
		return nil, false, false
	}
	start := s.i - 1
	escaped, ascii := false, true
	for s.i < len(s.data) {
		c := s.data[s.i]
		switch {
		case c == '"':
			s.i++
			tok = s.data[start:s.i]
			return tok, !escaped && (ascii || utf8.Valid(tok)), true
		case c == '\\':
			escaped = true
			s.i += 2
		case c < 0x20:
			return nil, false, false // encoding/json rejects control characters
		default:
			ascii = ascii && c < utf8.RuneSelf
			s.i++
		}
	}
	return nil, false, false
}

// plainString reads a plain string (an object key), its quotes removed.
func (s *scanner) plainString() ([]byte, bool) {
	tok, plain, ok := s.stringToken()
	if !ok || !plain {
		return nil, false
	}
	return tok[1 : len(tok)-1], true
}

// str reads a string value. Escapes and invalid UTF-8 are left to encoding/json, whose
// unquoting (surrogates, replacement characters) decides their value.
func (s *scanner) str(dst *string) bool {
	if s.null() {
		return true
	}
	tok, plain, ok := s.stringToken()
	if !ok {
		return false
	}
	if plain {
		*dst = string(tok[1 : len(tok)-1])
		return true
	}
	return json.Unmarshal(tok, dst) == nil
}

// name reads a string value that recurs in the batch, interned.
func (s *scanner) name(dst *string) bool {
	if s.null() {
		return true
	}
	tok, plain, ok := s.stringToken()
	if !ok {
		return false
	}
	if !plain {
		return json.Unmarshal(tok, dst) == nil
	}
	raw := tok[1 : len(tok)-1]
	if v, ok := s.names[string(raw)]; ok {
		*dst = v
		return true
	}
	*dst = string(raw)
	s.names[*dst] = *dst
	return true
}

// time reads a time as encoding/json does: the string token, unescaped, through
// time.Time's UnmarshalJSON.
func (s *scanner) time(dst *time.Time) bool {
	if s.null() {
		return true
	}
	tok, _, ok := s.stringToken()
	return ok && dst.UnmarshalJSON(tok) == nil
}

func (s *scanner) timePtr(dst **time.Time) bool {
	if s.null() {
		return true
	}
	t := new(time.Time)
	*dst = t
	return s.time(t)
}

// int64 reads an integer: JSON's grammar without a fraction or an exponent (which
// encoding/json refuses for integer fields), in range.
func (s *scanner) int64(dst *int64) bool {
	if s.null() {
		return true
	}
	neg := s.eat('-')
	start := s.i
	var v uint64
	for s.i < len(s.data) && s.data[s.i] >= '0' && s.data[s.i] <= '9' {
		if s.i-start >= 19 {
			return false // may overflow: left to encoding/json
		}
		v = v*10 + uint64(s.data[s.i]-'0')
		s.i++
	}
	n := s.i - start
	if n == 0 || n > 1 && s.data[start] == '0' {
		return false
	}
	if s.i < len(s.data) {
		switch s.data[s.i] {
		case '.', 'e', 'E':
			return false
		}
	}
	// 19 digits fit in uint64; int64 takes up to 2^63-1, or 2^63 negated.
	if v > 1<<63-1 && !(neg && v == 1<<63) {
		return false
	}
	if neg {
		*dst = -int64(v)
	} else {
		*dst = int64(v)
	}
	return true
}

func (s *scanner) bool(dst *bool) bool {
	switch {
	case s.null():
	case s.literal("true"):
		*dst = true
	case s.literal("false"):
		*dst = false
	default:
		return false
	}
	return true
}

// null consumes a null, which leaves a field as it is: zero, as keys do not repeat
// (encoding/json leaves strings, numbers, booleans and times alone, and sets slices and
// pointers to nil).
func (s *scanner) null() bool { return s.literal("null") }

// literal consumes word if it is next.
func (s *scanner) literal(word string) bool {
	rest := s.data[s.i:]
	if len(rest) < len(word) || string(rest[:len(word)]) != word {
		return false
	}
	// A literal runs into the next token only in malformed JSON ("truex").
	if len(rest) > len(word) {
		switch rest[len(word)] {
		case ' ', '\t', '\n', '\r', ',', '}', ']':
		default:
			return false
		}
	}
	s.i += len(word)
	return true
}
