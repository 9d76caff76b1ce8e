package tenancy

import (
	"errors"
	"testing"
)

func TestRoles(t *testing.T) {
	tests := []struct {
		role                       Role
		read, write, manage, valid bool
	}{
		{RoleOwner, true, true, true, true},
		{RoleManager, true, true, false, true},
		{RoleViewer, true, false, false, true},
		{"", false, false, false, false},
		{"Owner", false, false, false, false},
		{"admin", false, false, false, false},
	}
	for _, tt := range tests {
		if got := tt.role.Valid(); got != tt.valid {
			t.Errorf("%q.Valid() = %v", tt.role, got)
		}
		if got := tt.role.CanRead(); got != tt.read {
			t.Errorf("%q.CanRead() = %v", tt.role, got)
		}
		if got := tt.role.CanWrite(); got != tt.write {
			t.Errorf("%q.CanWrite() = %v", tt.role, got)
		}
		if got := tt.role.CanManage(); got != tt.manage {
			t.Errorf("%q.CanManage() = %v", tt.role, got)
		}
		_, err := ParseRole(string(tt.role))
		if tt.valid != (err == nil) || (err != nil && !errors.Is(err, ErrInvalidRole)) {
			t.Errorf("ParseRole(%q) error = %v", tt.role, err)
		}
	}
	if !RoleOwner.AtLeast(RoleManager) || RoleViewer.AtLeast(RoleManager) || !RoleManager.AtLeast(RoleManager) {
		t.Error("AtLeast does not order owner > manager > viewer")
	}
	if Role("bogus").AtLeast(RoleViewer) {
		t.Error("an invalid role must not grant anything")
	}
}
