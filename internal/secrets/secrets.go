// Package secrets is the server's keyring for secrets at rest: Stripe keys, Slack tokens,
// SMTP passwords and webhook secrets are sealed with AES-256-GCM before they reach
// Postgres, and opened only when used.
//
// The keyring comes from LIMITR_SECRET_KEY, a comma-separated list of keys, newest first.
// Each key is 32 random bytes in base64 (standard or URL alphabet, padded or not),
// optionally prefixed with an id and a colon:
//
//	LIMITR_SECRET_KEY=2024b:q3J0...,2024a:Zm9v...
//
// A key without an id gets one derived from the key (the first 8 hex digits of its
// SHA-256). [Keyring.Seal] always uses the newest key and writes that key's id into the
// sealed value; [Keyring.Open] uses whichever key the value names. Rotation is therefore:
// put a new key first, keep the old ones after it, re-seal every value for which
// [Keyring.NeedsRotation] reports true, then drop the old keys.
//
// Every seal takes additional authenticated data (AAD) that binds the ciphertext to where
// it is stored, such as the tenant id and the column name (see [AAD]): a ciphertext copied
// into another row, tenant or column does not open there.
package secrets

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// EnvVar is the environment variable the server reads its keyring from. It appears in
// every configuration error so that an operator knows what to fix.
const EnvVar = "LIMITR_SECRET_KEY"

// Sentinel errors, for errors.Is.
var (
	// ErrUnknownKey: the sealed value names a key that is not in the keyring (any more).
	ErrUnknownKey = errors.New("sealed with a key that is not in the keyring")
	// ErrTampered: the value is well formed but does not authenticate: it was changed, it
	// belongs to another row (other AAD), or its key id was reused for another key.
	ErrTampered = errors.New("sealed value does not authenticate")
	// ErrCorrupt: the value is not a sealed value of a version this package reads.
	ErrCorrupt = errors.New("sealed value is malformed")
)

const (
	keySize   = 32 // AES-256
	nonceSize = 12 // the GCM standard nonce: 96 random bits
	tagSize   = 16
	maxIDLen  = 32
	// version1 is the first byte of the binary form.
	version1 = 0x01
	// textPrefix starts the text form: "v1.<keyid>.<base64url(nonce|ciphertext)>".
	textPrefix = "v1."
	// aadDomain separates this package's AAD from any other use of the same key.
	aadDomain = "limitr/secrets/v1"
)

// Keyring holds the keys secrets are sealed with, newest first. It is safe for concurrent
// use. Its String method names the key ids only, so a Keyring that ends up in a log line
// or an error message shows no key material.
type Keyring struct {
	keys []key // newest first
	byID map[string]*key
	// ephemeral: made up at start because LIMITR_SECRET_KEY is not set. What it seals
	// opens only in this process: fine for short-lived values (idempotent replies), never
	// for secrets that must outlive it.
	ephemeral bool
}

// NewEphemeral returns a keyring of one random key that exists only in this process,
// for a server started without LIMITR_SECRET_KEY: values it seals stay encrypted at rest
// but cannot be opened after a restart or by another replica. Callers that store
// secrets for later use must refuse to run on it (Ephemeral).
func NewEphemeral() (*Keyring, error) {
	spec, err := GenerateKey()
	if err != nil {
		return nil, err
	}
	kr, err := ParseKeyring("ephemeral:" + spec)
	if err != nil {
		return nil, err
	}
	kr.ephemeral = true
	return kr, nil
}

// Ephemeral reports a keyring made by NewEphemeral.
func (kr *Keyring) Ephemeral() bool { return kr.ephemeral }

type key struct {
	id   string
	aead cipher.AEAD
}

// KeyringError is what ParseKeyring returns: it names the entry at fault, never its value.
type KeyringError struct {
	// Entry is the position of the faulty key in the list, counting from 1; 0 when the
	// spec as a whole is wrong.
	Entry int
	// Reason says what is wrong.
	Reason string
}

func (e *KeyringError) Error() string {
	if e.Entry == 0 {
		return EnvVar + ": " + e.Reason
	}
	return fmt.Sprintf("%s: key %d: %s", EnvVar, e.Entry, e.Reason)
}

// ParseKeyring reads a keyring spec in the format of LIMITR_SECRET_KEY. Errors are
// *KeyringError.
func ParseKeyring(spec string) (*Keyring, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, &KeyringError{Reason: "is empty: set it to one or more base64 keys of 32 bytes, newest first (make one with `limitr admin gen-secret-key`)"}
	}
	entries := strings.Split(spec, ",")
	kr := &Keyring{keys: make([]key, 0, len(entries)), byID: make(map[string]*key, len(entries))}
	firstUse := map[string]int{}
	for i, entry := range entries {
		n := i + 1
		id, raw, reason := parseEntry(strings.TrimSpace(entry))
		if reason != "" {
			return nil, &KeyringError{Entry: n, Reason: reason}
		}
		if prev, dup := firstUse[id]; dup {
			clear(raw)
			return nil, &KeyringError{Entry: n, Reason: fmt.Sprintf("id %q is already the id of key %d", id, prev)}
		}
		firstUse[id] = n
		block, err := aes.NewCipher(raw)
		clear(raw) // the cipher keeps its own expanded copy
		if err != nil {
			return nil, &KeyringError{Entry: n, Reason: err.Error()}
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, &KeyringError{Entry: n, Reason: err.Error()}
		}
		kr.keys = append(kr.keys, key{id: id, aead: aead})
	}
	for i := range kr.keys {
		kr.byID[kr.keys[i].id] = &kr.keys[i]
	}
	return kr, nil
}

// parseEntry reads "[id:]base64". The reason it returns, if any, does not quote the value.
func parseEntry(entry string) (id string, raw []byte, reason string) {
	if entry == "" {
		return "", nil, "is empty (a stray comma?)"
	}
	b64 := entry
	// ':' is in neither base64 alphabet, so the first one ends an id.
	if before, after, ok := strings.Cut(entry, ":"); ok {
		id, b64 = strings.TrimSpace(before), strings.TrimSpace(after)
		if reason := checkID(id); reason != "" {
			return "", nil, reason
		}
	}
	raw, err := decodeBase64(b64)
	if err != nil {
		return "", nil, "must be 32 bytes of base64, but it is not base64"
	}
	if len(raw) != keySize {
		clear(raw)
		return "", nil, fmt.Sprintf("must be 32 bytes of base64, got %d bytes", len(raw))
	}
	if id == "" {
		sum := sha256.Sum256(raw)
		id = hex.EncodeToString(sum[:4])
	}
	return id, raw, ""
}

// checkID keeps ids to characters that are safe in the text form (which uses '.' as a
// separator) and in logs, and short enough for the one-byte length of the binary form.
func checkID(id string) string {
	if id == "" || len(id) > maxIDLen {
		return fmt.Sprintf("the id before ':' must be 1 to %d characters", maxIDLen)
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			// Not quoted: a malformed "id" may be part of a key pasted wrongly.
			return "the id before ':' may only use letters, digits, '-' and '_'"
		}
	}
	return ""
}

// decodeBase64 accepts the standard and the URL alphabet, with or without padding.
func decodeBase64(s string) ([]byte, error) {
	enc := base64.RawStdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.RawURLEncoding
	}
	return enc.Strict().DecodeString(strings.TrimRight(s, "="))
}

// GenerateKey returns a new random key as a LIMITR_SECRET_KEY entry (unpadded base64url,
// safe in shells and env files). Put it first in the list to start sealing with it.
func GenerateKey() (string, error) {
	var raw [keySize]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("secrets: generate key: %w", err)
	}
	defer clear(raw[:])
	return base64.RawURLEncoding.EncodeToString(raw[:]), nil
}

// IDs lists the key ids, newest first. They are not secret.
func (kr *Keyring) IDs() []string {
	out := make([]string, len(kr.keys))
	for i, k := range kr.keys {
		out[i] = k.id
	}
	return out
}

// String names the key ids only.
func (kr *Keyring) String() string {
	return "secrets.Keyring{" + strings.Join(kr.IDs(), ",") + "}"
}

// GoString keeps %#v from printing the ciphers' key schedules.
func (kr *Keyring) GoString() string { return kr.String() }

// Seal encrypts plaintext under the newest key. aad binds the result to its place (see
// AAD): Open must be given the same aad. The binary result is
// 0x01 | len(id) | id | nonce | ciphertext+tag.
func (kr *Keyring) Seal(plaintext, aad []byte) ([]byte, error) {
	k := &kr.keys[0]
	out := make([]byte, 0, 2+len(k.id)+nonceSize+len(plaintext)+tagSize)
	out = append(out, version1, byte(len(k.id)))
	out = append(out, k.id...)
	return k.seal(out, plaintext, aad)
}

// seal appends nonce|ciphertext to dst.
func (k *key) seal(dst, plaintext, aad []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, make([]byte, nonceSize)...)
	nonce := dst[start:]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("secrets: seal: %w", err)
	}
	return k.aead.Seal(dst, nonce, plaintext, fullAAD(k.id, aad)), nil
}

// Open decrypts a value made by Seal with the key it names.
func (kr *Keyring) Open(sealed, aad []byte) ([]byte, error) {
	id, body, err := splitBinary(sealed)
	if err != nil {
		return nil, err
	}
	return kr.open(id, body, aad)
}

func (kr *Keyring) open(id string, body, aad []byte) ([]byte, error) {
	k, ok := kr.byID[id]
	if !ok {
		return nil, fmt.Errorf("secrets: key %q: %w", id, ErrUnknownKey)
	}
	if len(body) < nonceSize+tagSize {
		return nil, fmt.Errorf("secrets: %d bytes after the key id, want at least %d: %w", len(body), nonceSize+tagSize, ErrCorrupt)
	}
	pt, err := k.aead.Open(nil, body[:nonceSize], body[nonceSize:], fullAAD(id, aad))
	if err != nil {
		return nil, fmt.Errorf("secrets: key %q: %w", id, ErrTampered)
	}
	return pt, nil
}

// NeedsRotation reports whether sealed (binary or text form) names a key other than the
// newest, so it should be opened and sealed again. It is false for a value that is not
// sealed at all: Open reports what is wrong with it.
func (kr *Keyring) NeedsRotation(sealed []byte) bool {
	id, _, err := splitBinary(sealed)
	if err != nil {
		if id, _, err = splitText(string(sealed)); err != nil {
			return false
		}
	}
	return id != kr.keys[0].id
}

// NeedsRotationString is NeedsRotation for the text form: true when sealed was not
// sealed with the newest key (re-seal it), or cannot be read at all.
func (kr *Keyring) NeedsRotationString(sealed string) bool {
	id, _, err := splitText(sealed)
	return err != nil || id != kr.keys[0].id
}

// SealString is Seal in a text form safe for a Postgres text column, a URL or a log
// line: "v1.<keyid>.<base64url(nonce|ciphertext)>".
func (kr *Keyring) SealString(plaintext, aad []byte) (string, error) {
	k := &kr.keys[0]
	body, err := k.seal(make([]byte, 0, nonceSize+len(plaintext)+tagSize), plaintext, aad)
	if err != nil {
		return "", err
	}
	return textPrefix + k.id + "." + base64.RawURLEncoding.EncodeToString(body), nil
}

// OpenString opens the text form made by SealString.
func (kr *Keyring) OpenString(sealed string, aad []byte) ([]byte, error) {
	id, body, err := splitText(sealed)
	if err != nil {
		return nil, err
	}
	return kr.open(id, body, aad)
}

func splitBinary(sealed []byte) (id string, body []byte, err error) {
	if len(sealed) < 2 || sealed[0] != version1 {
		return "", nil, fmt.Errorf("secrets: not a sealed value of version 1: %w", ErrCorrupt)
	}
	n := int(sealed[1])
	if n == 0 || n > maxIDLen || len(sealed) < 2+n {
		return "", nil, fmt.Errorf("secrets: bad key id length %d: %w", n, ErrCorrupt)
	}
	id = string(sealed[2 : 2+n])
	if checkID(id) != "" {
		return "", nil, fmt.Errorf("secrets: bad key id: %w", ErrCorrupt)
	}
	return id, sealed[2+n:], nil
}

func splitText(sealed string) (id string, body []byte, err error) {
	rest, ok := strings.CutPrefix(sealed, textPrefix)
	if !ok {
		return "", nil, fmt.Errorf("secrets: text does not start with %q: %w", textPrefix, ErrCorrupt)
	}
	id, b64, ok := strings.Cut(rest, ".")
	if !ok || checkID(id) != "" {
		return "", nil, fmt.Errorf("secrets: text has no valid key id: %w", ErrCorrupt)
	}
	body, err = base64.RawURLEncoding.Strict().DecodeString(b64)
	if err != nil {
		return "", nil, fmt.Errorf("secrets: text is not base64url: %w", ErrCorrupt)
	}
	return id, body, nil
}

// fullAAD authenticates the format version and the key id with the caller's aad. Key ids
// never contain a NUL, so the encoding is unambiguous.
func fullAAD(id string, aad []byte) []byte {
	out := make([]byte, 0, len(aadDomain)+len(id)+2+len(aad))
	out = append(out, aadDomain...)
	out = append(out, 0)
	out = append(out, id...)
	out = append(out, 0)
	return append(out, aad...)
}

// AAD builds additional authenticated data from parts, such as a tenant id, a table and a
// column: AAD("tenant-1", "stripe", "api_key"). Each part is length-prefixed, so parts
// cannot run into each other: AAD("ab", "c") differs from AAD("a", "bc").
func AAD(parts ...string) []byte {
	var buf bytes.Buffer
	for _, p := range parts {
		var n [binary.MaxVarintLen64]byte
		buf.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		buf.WriteString(p)
	}
	return buf.Bytes()
}
