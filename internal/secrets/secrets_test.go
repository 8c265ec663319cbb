package secrets

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fixedKey is a key of 32 bytes of b, in the given encoding.
func fixedKey(b byte, enc *base64.Encoding) string {
	return enc.EncodeToString(bytes.Repeat([]byte{b}, keySize))
}

func mustRing(t testing.TB, spec string) *Keyring {
	t.Helper()
	kr, err := ParseKeyring(spec)
	if err != nil {
		t.Fatalf("ParseKeyring: %v", err)
	}
	return kr
}

func TestParseKeyring(t *testing.T) {
	// A key whose base64 has '+' and '/' in the standard alphabet ('-' and '_' in URL).
	odd := bytes.Repeat([]byte{0xfb, 0xff, 0xbf}, 11)[:keySize]
	derived := func(raw []byte) string { s := sha256.Sum256(raw); return hex.EncodeToString(s[:4]) }
	ones := bytes.Repeat([]byte{1}, keySize)

	for _, tc := range []struct {
		name, spec string
		ids        []string
	}{
		{"std padded", fixedKey(1, base64.StdEncoding), []string{derived(ones)}},
		{"std raw", fixedKey(1, base64.RawStdEncoding), []string{derived(ones)}},
		{"url padded", base64.URLEncoding.EncodeToString(odd), []string{derived(odd)}},
		{"url raw", base64.RawURLEncoding.EncodeToString(odd), []string{derived(odd)}},
		{"std with + and /", base64.StdEncoding.EncodeToString(odd), []string{derived(odd)}},
		{"with ids, newest first", "2024b:" + fixedKey(2, base64.StdEncoding) + ",2024a:" + fixedKey(1, base64.RawURLEncoding), []string{"2024b", "2024a"}},
		{"spaces around entries", "  a : " + fixedKey(1, base64.StdEncoding) + " , " + fixedKey(2, base64.StdEncoding) + "\n", []string{"a", derived(bytes.Repeat([]byte{2}, keySize))}},
		{"same key under two ids", "new:" + fixedKey(1, base64.StdEncoding) + ",old:" + fixedKey(1, base64.StdEncoding), []string{"new", "old"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kr := mustRing(t, tc.spec)
			if got := kr.IDs(); fmt.Sprint(got) != fmt.Sprint(tc.ids) {
				t.Fatalf("ids %v, want %v", got, tc.ids)
			}
		})
	}
}

func TestParseKeyringErrors(t *testing.T) {
	k1 := fixedKey(1, base64.StdEncoding)
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, tc := range []struct {
		name, spec string
		entry      int
		want       string
	}{
		{"empty", "", 0, "LIMITR_SECRET_KEY: is empty"},
		{"blank", "  \n", 0, "LIMITR_SECRET_KEY: is empty"},
		{"16 bytes", k1 + "," + short, 2, "LIMITR_SECRET_KEY: key 2: must be 32 bytes of base64, got 16 bytes"},
		{"33 bytes", base64.StdEncoding.EncodeToString(make([]byte, 33)), 1, "key 1: must be 32 bytes of base64, got 33 bytes"},
		{"not base64", "this is not base64!", 1, "key 1: must be 32 bytes of base64, but it is not base64"},
		{"mixed alphabets", strings.Replace(base64.RawStdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff, 0xbf}, 11)[:keySize]), "+", "-", 1), 1, "not base64"},
		{"stray comma", k1 + ",", 2, "key 2: is empty (a stray comma?)"},
		{"empty id", ":" + k1, 1, "key 1: the id before ':' must be 1 to 32 characters"},
		{"long id", strings.Repeat("x", 33) + ":" + k1, 1, "must be 1 to 32 characters"},
		{"id with a dot", "a.b:" + k1, 1, "key 1: the id before ':' may only use letters, digits, '-' and '_'"},
		{"duplicate ids", "a:" + k1 + ",b:" + fixedKey(2, base64.StdEncoding) + ",a:" + fixedKey(3, base64.StdEncoding), 3, `key 3: id "a" is already the id of key 1`},
		{"duplicate derived ids", k1 + "," + k1, 2, "is already the id of key 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kr, err := ParseKeyring(tc.spec)
			if err == nil {
				t.Fatalf("accepted: %v", kr)
			}
			var ke *KeyringError
			if !errors.As(err, &ke) || ke.Entry != tc.entry {
				t.Fatalf("error %#v, want a *KeyringError for entry %d", err, tc.entry)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestParseKeyringErrorsHideKeys: an error never quotes key material, even when an entry
// is malformed in a way that makes part of it look like an id.
func TestParseKeyringErrorsHideKeys(t *testing.T) {
	secret := "c2VjcmV0+/=" // base64 characters that are not valid in an id
	for _, spec := range []string{
		secret + ":" + fixedKey(1, base64.StdEncoding),
		"id:" + secret,
		secret,
		fixedKey(1, base64.StdEncoding) + "," + secret,
	} {
		_, err := ParseKeyring(spec)
		if err == nil {
			t.Fatalf("%q accepted", spec)
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "c2VjcmV0") {
			t.Fatalf("error quotes the key: %v", err)
		}
	}
}

func TestKeyringDoesNotPrintKeys(t *testing.T) {
	kr := mustRing(t, "a:"+fixedKey(7, base64.StdEncoding))
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		if got := fmt.Sprintf(format, kr); got != "secrets.Keyring{a}" {
			t.Errorf("%s: %q", format, got)
		}
	}
}

func TestGenerateKey(t *testing.T) {
	a, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Fatal("two generated keys are equal")
	}
	if strings.ContainsAny(a, "+/=:,") {
		t.Fatalf("%q is not shell- and list-safe", a)
	}
	kr := mustRing(t, a+","+b)
	sealed, err := kr.Seal([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := kr.Open(sealed, nil); err != nil || string(pt) != "x" {
		t.Fatalf("Open: %q %v", pt, err)
	}
}

func TestSealOpen(t *testing.T) {
	kr := mustRing(t, "k1:"+fixedKey(1, base64.StdEncoding))
	aad := AAD("tenant-1", "stripe_settings", "api_key")
	for _, pt := range [][]byte{nil, {}, []byte("sk_live_123"), bytes.Repeat([]byte{0}, 4096)} {
		sealed, err := kr.Seal(pt, aad)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(sealed, []byte("sk_live")) {
			t.Fatal("plaintext in the sealed value")
		}
		got, err := kr.Open(sealed, aad)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("Open(Seal(%q)) = %q, %v", pt, got, err)
		}
		text, err := kr.SealString(pt, aad)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(text, "v1.k1.") || strings.ContainsAny(text, "+/=\x00'\"\\ \n") {
			t.Fatalf("text form %q", text)
		}
		got, err = kr.OpenString(text, aad)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("OpenString(SealString(%q)) = %q, %v", pt, got, err)
		}
	}
	// Random nonces: the same plaintext seals differently each time.
	a, _ := kr.Seal([]byte("same"), aad)
	b, _ := kr.Seal([]byte("same"), aad)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are equal: the nonce is not random")
	}
}

// TestOpenFailures: each way a sealed value can be wrong maps to its sentinel.
func TestOpenFailures(t *testing.T) {
	kr := mustRing(t, "new:"+fixedKey(2, base64.StdEncoding)+",old:"+fixedKey(1, base64.StdEncoding))
	aad := AAD("tenant-1", "slack_token")
	sealed, err := kr.Seal([]byte("xoxb-secret"), aad)
	if err != nil {
		t.Fatal(err)
	}
	text, err := kr.SealString([]byte("xoxb-secret"), aad)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte { c := bytes.Clone(sealed); c[i] ^= 1; return c }
	// A key id that is in the ring but is not the key that sealed it.
	relabeled := append([]byte{version1, 3}, "old"...)
	relabeled = append(relabeled, sealed[2+len("new"):]...)
	other := mustRing(t, "gone:"+fixedKey(9, base64.StdEncoding))
	fromGone, _ := other.Seal([]byte("x"), aad)
	fromGoneText, _ := other.SealString([]byte("x"), aad)

	for _, tc := range []struct {
		name   string
		sealed []byte
		aad    []byte
		want   error
	}{
		{"another row's aad", sealed, AAD("tenant-2", "slack_token"), ErrTampered},
		{"another column's aad", sealed, AAD("tenant-1", "smtp_password"), ErrTampered},
		{"aad parts shifted", sealed, AAD("tenant-1s", "lack_token"), ErrTampered},
		{"no aad", sealed, nil, ErrTampered},
		{"flipped ciphertext bit", flip(len(sealed) - 20), aad, ErrTampered},
		{"flipped tag bit", flip(len(sealed) - 1), aad, ErrTampered},
		{"flipped nonce bit", flip(2 + 3), aad, ErrTampered},
		{"relabeled to another key", relabeled, aad, ErrTampered},
		{"key no longer in the ring", fromGone, aad, ErrUnknownKey},
		{"empty", nil, aad, ErrCorrupt},
		{"version 2", append([]byte{2}, sealed[1:]...), aad, ErrCorrupt},
		{"id length 0", []byte{version1, 0, 1, 2, 3}, aad, ErrCorrupt},
		{"id length past the end", []byte{version1, 30, 'a'}, aad, ErrCorrupt},
		{"truncated", sealed[:2+3+nonceSize+tagSize-1], aad, ErrCorrupt},
		{"bad id byte", append([]byte{version1, 3, 'n', '.', 'w'}, sealed[5:]...), aad, ErrCorrupt},
		{"text form given to Open", []byte(text), aad, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := kr.Open(tc.sealed, tc.aad)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open = %q, %v; want %v", pt, err, tc.want)
			}
			if pt != nil {
				t.Fatalf("plaintext returned with an error: %q", pt)
			}
		})
	}

	body := text[len("v1.new."):]
	changed := "A" + body[1:]
	if body[0] == 'A' {
		changed = "B" + body[1:]
	}
	for _, tc := range []struct {
		name, sealed string
		aad          []byte
		want         error
	}{
		{"another row's aad", text, AAD("tenant-2", "slack_token"), ErrTampered},
		{"relabeled", "v1.old." + body, aad, ErrTampered},
		{"changed body", "v1.new." + changed, aad, ErrTampered},
		{"key no longer in the ring", fromGoneText, aad, ErrUnknownKey},
		{"empty", "", aad, ErrCorrupt},
		{"v2", "v2.new." + body, aad, ErrCorrupt},
		{"no id", "v1." + body, aad, ErrCorrupt},
		{"padded", text + "==", aad, ErrCorrupt},
		{"std alphabet", "v1.new." + strings.NewReplacer("-", "+", "_", "/").Replace(body) + "+/", aad, ErrCorrupt},
		{"short body", "v1.new.AAAA", aad, ErrCorrupt},
		{"binary form given to OpenString", string(sealed), aad, ErrCorrupt},
	} {
		t.Run("text "+tc.name, func(t *testing.T) {
			pt, err := kr.OpenString(tc.sealed, tc.aad)
			if !errors.Is(err, tc.want) {
				t.Fatalf("OpenString = %q, %v; want %v", pt, err, tc.want)
			}
		})
	}
}

// TestRotation: a value sealed under the old key opens with the ring [new, old], needs
// rotation, and once sealed again is under the new key and opens without the old one.
func TestRotation(t *testing.T) {
	oldKey, newKey := fixedKey(1, base64.StdEncoding), fixedKey(2, base64.RawURLEncoding)
	before := mustRing(t, "2024a:"+oldKey)
	aad := AAD("tenant-1", "stripe_settings", "api_key")
	sealed, err := before.Seal([]byte("sk_live_abc"), aad)
	if err != nil {
		t.Fatal(err)
	}
	text, err := before.SealString([]byte("sk_live_abc"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if before.NeedsRotation(sealed) || before.NeedsRotation([]byte(text)) {
		t.Fatal("a value under the newest key needs rotation")
	}

	after := mustRing(t, "2024b:"+newKey+",2024a:"+oldKey)
	if pt, err := after.Open(sealed, aad); err != nil || string(pt) != "sk_live_abc" {
		t.Fatalf("old value with the rotated ring: %q %v", pt, err)
	}
	if pt, err := after.OpenString(text, aad); err != nil || string(pt) != "sk_live_abc" {
		t.Fatalf("old text value with the rotated ring: %q %v", pt, err)
	}
	if !after.NeedsRotation(sealed) || !after.NeedsRotation([]byte(text)) {
		t.Fatal("a value under the old key does not need rotation")
	}
	pt, _ := after.Open(sealed, aad)
	resealed, err := after.Seal(pt, aad)
	if err != nil {
		t.Fatal(err)
	}
	if after.NeedsRotation(resealed) {
		t.Fatal("the re-sealed value still needs rotation")
	}
	if !bytes.HasPrefix(resealed, append([]byte{version1, 5}, "2024b"...)) {
		t.Fatalf("re-sealed under %q", resealed[:8])
	}
	// The old key can now go.
	onlyNew := mustRing(t, "2024b:"+newKey)
	if pt, err := onlyNew.Open(resealed, aad); err != nil || string(pt) != "sk_live_abc" {
		t.Fatalf("re-sealed value without the old key: %q %v", pt, err)
	}
	if _, err := onlyNew.Open(sealed, aad); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old value without the old key: %v, want ErrUnknownKey", err)
	}
	// Garbage is not "needs rotation": there is nothing to rotate.
	for _, g := range [][]byte{nil, []byte("v1."), {version1}, []byte("plain")} {
		if after.NeedsRotation(g) {
			t.Errorf("NeedsRotation(%q) = true", g)
		}
	}
}

func TestAAD(t *testing.T) {
	if bytes.Equal(AAD("ab", "c"), AAD("a", "bc")) {
		t.Fatal("AAD parts run into each other")
	}
	if bytes.Equal(AAD("a", ""), AAD("a")) {
		t.Fatal("an empty part is lost")
	}
	if !bytes.Equal(AAD("t", "col"), AAD("t", "col")) {
		t.Fatal("AAD is not deterministic")
	}
}

func FuzzParseKeyring(f *testing.F) {
	k := fixedKey(1, base64.StdEncoding)
	for _, s := range []string{"", k, "a:" + k, k + "," + k, "a:b:c", ":,:", "a:" + k + ",b:" + fixedKey(2, base64.RawURLEncoding), "\x00:\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		kr, err := ParseKeyring(spec)
		if err != nil {
			var ke *KeyringError
			if !errors.As(err, &ke) {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		ids := kr.IDs()
		if len(ids) == 0 {
			t.Fatal("an empty keyring was accepted")
		}
		seen := map[string]bool{}
		for _, id := range ids {
			if seen[id] || checkID(id) != "" {
				t.Fatalf("bad or duplicate id %q", id)
			}
			seen[id] = true
		}
		sealed, err := kr.Seal([]byte("p"), []byte("a"))
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := kr.Open(sealed, []byte("a")); err != nil || string(pt) != "p" {
			t.Fatalf("round trip: %q %v", pt, err)
		}
	})
}

func FuzzOpen(f *testing.F) {
	kr := mustRing(f, "new:"+fixedKey(2, base64.StdEncoding)+",old:"+fixedKey(1, base64.StdEncoding))
	old := mustRing(f, "old:"+fixedKey(1, base64.StdEncoding))
	s1, _ := kr.Seal([]byte("secret"), []byte("aad"))
	s2, _ := old.Seal([]byte("secret"), []byte("aad"))
	t1, _ := kr.SealString([]byte("secret"), []byte("aad"))
	for _, s := range [][]byte{nil, {version1}, {version1, 3, 'n', 'e', 'w'}, s1, s2, []byte(t1), []byte("v1.new."), []byte("v1..")} {
		f.Add(s, []byte("aad"))
	}
	f.Fuzz(func(t *testing.T, sealed, aad []byte) {
		pt, err := kr.Open(sealed, aad)
		if err == nil {
			// Forging a value is out of the fuzzer's reach: it can only have replayed a seed.
			if string(pt) != "secret" {
				t.Fatalf("opened a forged value: %q", pt)
			}
		} else if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTampered) && !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("error without a sentinel: %v", err)
		}
		pt, err = kr.OpenString(string(sealed), aad)
		if err == nil && string(pt) != "secret" {
			t.Fatalf("opened a forged text value: %q", pt)
		} else if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTampered) && !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("error without a sentinel: %v", err)
		}
		_ = kr.NeedsRotation(sealed)
	})
}

func TestEphemeralKeyring(t *testing.T) {
	a, err := NewEphemeral()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewEphemeral()
	if err != nil {
		t.Fatal(err)
	}
	if !a.Ephemeral() || !b.Ephemeral() {
		t.Fatal("not marked ephemeral")
	}
	sealed, err := a.Seal([]byte("lk_admin_secret"), AAD("x"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := a.Open(sealed, AAD("x")); err != nil || string(got) != "lk_admin_secret" {
		t.Fatalf("open in the same process: %q %v", got, err)
	}
	// Another process's ephemeral key (a restart, another replica) cannot open it.
	if _, err := b.Open(sealed, AAD("x")); err == nil {
		t.Fatal("another ephemeral keyring opened the value")
	}
	kr, err := ParseKeyring(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if kr.Ephemeral() {
		t.Fatal("a configured keyring is ephemeral")
	}
}

func mustKey(t *testing.T) string {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}
