package users

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/validation"
)

func TestInputsValidate(t *testing.T) {
	tid, uid := uuid.New(), uuid.New()
	long := strings.Repeat("x", MaxPasswordLen+1)
	for _, tc := range []struct {
		name  string
		input interface{ Validate() error }
		want  []string // "path: message" prefixes, in order; none means valid
	}{
		{"user ok", CreateUserInput{TenantID: tid, Email: "A@B.test", Password: "0123456789", Role: RoleOwner}, nil},
		{"user everything wrong", CreateUserInput{Email: "no-at", Name: "\x00", Password: "short", Role: "root"},
			[]string{"tenant_id: is required", "email: is not an email address", "name: must not contain", "password: must be at least 10", "role: must be one of"}},
		{"user long password", CreateUserInput{TenantID: tid, Email: "a@b.test", Password: long, Role: RoleViewer}, []string{"password: must be at most"}},
		{"login ok", LoginInput{Email: "a@b.test", Password: "x"}, nil},
		{"login empty", LoginInput{Email: " ", Password: ""}, []string{"email: is required", "password: is required"}},
		{"invite ok", InviteInput{TenantID: tid, Email: "a@b.test", Role: RoleBilling}, nil},
		{"invite bad", InviteInput{TenantID: tid, Email: "a@", Role: ""}, []string{"email: is not an email address", "role: must be one of"}},
		{"accept ok", AcceptInviteInput{Token: "t"}, nil},
		{"accept bad", AcceptInviteInput{Password: "short"}, []string{"token: is required", "password: must be at least"}},
		{"role ok", ChangeRoleInput{TenantID: tid, UserID: uid, Role: RoleEditor}, nil},
		{"role bad", ChangeRoleInput{Role: "god"}, []string{"tenant_id: is required", "user_id: is required", "role: must be one of"}},
		{"remove bad", RemoveMemberInput{TenantID: tid}, []string{"user_id: is required"}},
		{"revoke bad", RevokeInviteInput{}, []string{"tenant_id: is required", "invite_id: is required"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.input.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("invalid: %v", err)
				}
				return
			}
			var verr *validation.Error
			if !errors.As(err, &verr) || !errors.Is(err, validation.ErrInvalid) {
				t.Fatalf("error %v, want a *validation.Error", err)
			}
			if len(verr.Fields) != len(tc.want) {
				t.Fatalf("%d problems %v, want %d", len(verr.Fields), verr.Fields, len(tc.want))
			}
			for i, w := range tc.want {
				if got := verr.Fields[i].Path + ": " + verr.Fields[i].Message; !strings.HasPrefix(got, w) {
					t.Errorf("problem %d = %q, want %q…", i, got, w)
				}
			}
		})
	}
}
