package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Key kinds.
const (
	KindAdmin = "admin"
	KindSDK   = "sdk"
)

// ErrInvalidKey is returned for a key that is malformed, unknown, or revoked.
var ErrInvalidKey = errors.New("invalid API key")

// APIKey is a key's record; the secret is never stored.
type APIKey struct {
	ID            uuid.UUID  `json:"id"`
	TenantID      uuid.UUID  `json:"-"`
	EnvironmentID *uuid.UUID `json:"-"`
	Environment   string     `json:"environment,omitempty"`
	Kind          string     `json:"kind"`
	Name          string     `json:"name"`
	Prefix        string     `json:"prefix"`
	CreatedAt     time.Time  `json:"created_at"`
	CreatedBy     *uuid.UUID `json:"created_by,omitempty"`
	RevokedAt     *time.Time `json:"revoked_at,omitempty"`
	hash          []byte
}

const keyAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newSecret returns "lk_<kind>_" + 32 random base62 characters (190 bits); the first 8
// random characters, with the kind, form the lookup prefix.
func newSecret(kind string) (secret, prefix string) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	out := make([]byte, len(b))
	for i, v := range b {
		out[i] = keyAlphabet[int(v)%len(keyAlphabet)]
	}
	secret = "lk_" + kind + "_" + string(out)
	return secret, secret[:len("lk_"+kind+"_")+8]
}

// ParsePrefix extracts the lookup prefix from a presented key, or fails on a malformed one.
func ParsePrefix(secret string) (string, error) {
	for _, kind := range []string{KindAdmin, KindSDK} {
		head := "lk_" + kind + "_"
		if strings.HasPrefix(secret, head) && len(secret) == len(head)+32 {
			for _, ch := range secret[len(head):] {
				if !strings.ContainsRune(keyAlphabet, ch) {
					return "", ErrInvalidKey
				}
			}
			return secret[:len(head)+8], nil
		}
	}
	return "", ErrInvalidKey
}

func hashSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// CreateKey makes a key and returns it with its secret, which is shown once.
func CreateKey(ctx context.Context, db DBTX, tenantID uuid.UUID, kind string, env *Environment, name string, createdBy *uuid.UUID) (APIKey, string, error) {
	if kind != KindAdmin && kind != KindSDK {
		return APIKey{}, "", fmt.Errorf("key kind %q: must be admin or sdk", kind)
	}
	if (kind == KindSDK) != (env != nil) {
		return APIKey{}, "", fmt.Errorf("an sdk key needs an environment and an admin key none")
	}
	for range 3 {
		secret, prefix := newSecret(kind)
		k := APIKey{ID: uuid.New(), TenantID: tenantID, Kind: kind, Name: name, Prefix: prefix, CreatedBy: createdBy}
		var envID *uuid.UUID
		if env != nil {
			envID, k.Environment = &env.ID, env.Name
			k.EnvironmentID = envID
		}
		err := db.QueryRow(ctx, `insert into api_keys (id, tenant_id, environment_id, kind, name, prefix, secret_hash, created_by)
			values ($1, $2, $3, $4, $5, $6, $7, $8) returning created_at`,
			k.ID, tenantID, envID, kind, name, prefix, hashSecret(secret), createdBy).Scan(&k.CreatedAt)
		if isUniqueViolation(err) {
			continue // a prefix collision: draw again
		}
		if err != nil {
			return APIKey{}, "", err
		}
		return k, secret, nil
	}
	return APIKey{}, "", fmt.Errorf("could not draw a unique key prefix")
}

const keyColumns = `k.id, k.tenant_id, k.environment_id, coalesce(e.name, ''), k.kind, k.name, k.prefix, k.created_at, k.created_by, k.revoked_at, k.secret_hash`

func scanKey(row interface{ Scan(...any) error }) (APIKey, error) {
	var k APIKey
	err := row.Scan(&k.ID, &k.TenantID, &k.EnvironmentID, &k.Environment, &k.Kind, &k.Name, &k.Prefix, &k.CreatedAt, &k.CreatedBy, &k.RevokedAt, &k.hash)
	return k, err
}

// Authenticate finds the live key matching a presented secret.
func Authenticate(ctx context.Context, db DBTX, secret string) (APIKey, error) {
	prefix, err := ParsePrefix(secret)
	if err != nil {
		return APIKey{}, err
	}
	k, err := scanKey(db.QueryRow(ctx, `select `+keyColumns+` from api_keys k left join environments e on e.id = k.environment_id where k.prefix = $1`, prefix))
	if err != nil {
		if err2 := notFound(err, "key"); errors.Is(err2, ErrNotFound) {
			return APIKey{}, ErrInvalidKey
		}
		return APIKey{}, err
	}
	if subtle.ConstantTimeCompare(k.hash, hashSecret(secret)) != 1 || k.RevokedAt != nil {
		return APIKey{}, ErrInvalidKey
	}
	return k, nil
}

// ListKeys lists a tenant's keys, newest first.
func ListKeys(ctx context.Context, db DBTX, tenantID uuid.UUID) ([]APIKey, error) {
	rows, err := db.Query(ctx, `select `+keyColumns+` from api_keys k left join environments e on e.id = k.environment_id
		where k.tenant_id = $1 order by k.created_at desc, k.id`, tenantID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []APIKey{}
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// KeyByID loads one of a tenant's keys.
func KeyByID(ctx context.Context, db DBTX, tenantID, id uuid.UUID) (APIKey, error) {
	k, err := scanKey(db.QueryRow(ctx, `select `+keyColumns+` from api_keys k left join environments e on e.id = k.environment_id
		where k.tenant_id = $1 and k.id = $2`, tenantID, id))
	return k, notFound(err, "key")
}

// RevokeKey revokes a key; revoking twice keeps the first time.
func RevokeKey(ctx context.Context, db DBTX, tenantID, id uuid.UUID) (APIKey, error) {
	tag, err := db.Exec(ctx, `update api_keys set revoked_at = coalesce(revoked_at, now()) where tenant_id = $1 and id = $2`, tenantID, id)
	if err != nil {
		return APIKey{}, err
	}
	if tag.RowsAffected() == 0 {
		return APIKey{}, fmt.Errorf("key: %w", ErrNotFound)
	}
	return KeyByID(ctx, db, tenantID, id)
}
