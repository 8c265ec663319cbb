package users

import (
	"strings"
	"testing"
)

func TestHashAndVerify(t *testing.T) {
	p := HashParams{Memory: 1024, Time: 1, Threads: 1}
	h, err := HashPassword("correct horse battery", p)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=1024,t=1,p=1$") {
		t.Fatalf("not a PHC argon2id string: %s", h)
	}
	h2, _ := HashPassword("correct horse battery", p)
	if h == h2 {
		t.Fatal("two hashes of one password are equal: the salt is not random")
	}
	if ok, err := VerifyPassword("correct horse battery", h); !ok || err != nil {
		t.Fatalf("right password: %v %v", ok, err)
	}
	if ok, err := VerifyPassword("correct horse batterY", h); ok || err != nil {
		t.Fatalf("wrong password: %v %v", ok, err)
	}
	// The parameters travel with the hash: one made with the defaults verifies too.
	hd, _ := HashPassword("pw", DefaultHashParams)
	if ok, _ := VerifyPassword("pw", hd); !ok {
		t.Fatal("default-params hash does not verify")
	}
	for _, bad := range []string{"", "plain", "$argon2i$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=18$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=0,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
		"$argon2id$v=19$m=1024,t=1,p=1$!!$aGFzaGhhc2hoYXNoaGFzaA"} {
		if ok, err := VerifyPassword("pw", bad); ok || err == nil {
			t.Errorf("%q: ok=%v err=%v, want an error", bad, ok, err)
		}
	}
}

func TestRolePermissions(t *testing.T) {
	all := []Permission{PermView, PermEditPolicy, PermPublishPolicy, PermManageCustomers, PermManageAlerts,
		PermManageBilling, PermManageSettings, PermManageKeys, PermManageUsers, PermManageOwners}
	want := map[Role][]Permission{
		RoleOwner:   all,
		RoleAdmin:   all[:len(all)-1],
		RoleEditor:  {PermView, PermEditPolicy, PermPublishPolicy, PermManageCustomers, PermManageAlerts},
		RoleBilling: {PermView, PermManageBilling},
		RoleViewer:  {PermView},
		"root":      nil,
		"":          nil,
	}
	for role, perms := range want {
		granted := map[Permission]bool{}
		for _, p := range perms {
			granted[p] = true
		}
		for _, p := range all {
			if got := Can(role, p); got != granted[p] {
				t.Errorf("Can(%q, %q) = %v, want %v", role, p, got, granted[p])
			}
		}
	}
	for _, r := range Roles {
		if !r.Valid() {
			t.Errorf("%q is not valid", r)
		}
	}
	if Role("root").Valid() {
		t.Error(`"root" is valid`)
	}
}
