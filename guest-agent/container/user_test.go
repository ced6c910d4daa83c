package container

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLookupUser(t *testing.T) {
	dir := t.TempDir()
	passwd, group := filepath.Join(dir, "passwd"), filepath.Join(dir, "group")
	os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n# comment\nbad line\n"), 0o644)
	os.WriteFile(group, []byte("root:x:0:\nwww:x:33:\nstaff:x:50:www,other\nadm:x:4:www\n"), 0o644)
	for _, tc := range []struct {
		spec     string
		uid, gid uint32
		groups   []uint32
		home     string
		err      bool
	}{
		{spec: "www", uid: 33, gid: 33, groups: []uint32{50, 4}, home: "/var/www"},
		{spec: "www:staff", uid: 33, gid: 50, groups: []uint32{4}, home: "/var/www"},
		{spec: "33:adm", uid: 33, gid: 4, groups: []uint32{50}, home: "/var/www"},
		{spec: "1234:staff", uid: 1234, gid: 50, home: "/"},
		{spec: "www:77", uid: 33, gid: 77, groups: []uint32{50, 4}, home: "/var/www"},
		{spec: "nobody", err: true},
		{spec: "www:nogroup", err: true},
	} {
		u, err := lookupUser(tc.spec, passwd, group)
		if tc.err {
			if err == nil {
				t.Errorf("lookupUser(%q) = %+v, want an error", tc.spec, u)
			}
			continue
		}
		if err != nil || u.uid != tc.uid || u.gid != tc.gid || !slices.Equal(u.groups, tc.groups) || u.home != tc.home {
			t.Errorf("lookupUser(%q) = %+v, %v; want uid %d gid %d groups %v home %s", tc.spec, u, err, tc.uid, tc.gid, tc.groups, tc.home)
		}
	}
	if _, err := lookupUser("www", filepath.Join(dir, "none"), group); err == nil {
		t.Error("a name without a passwd file resolved")
	}
	if u, err := lookupUser("5:6", filepath.Join(dir, "none"), filepath.Join(dir, "none")); err != nil || u.uid != 5 || u.gid != 6 {
		t.Errorf("numeric IDs without passwd and group files: %+v, %v", u, err)
	}
}

func TestLookupGroups(t *testing.T) {
	group := filepath.Join(t.TempDir(), "group")
	if err := os.WriteFile(group, []byte("root:x:0:\naudio:x:29:\nbad:x:nan:\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := lookupGroups([]string{"audio", "1234"}, group)
	if err != nil || len(got) != 2 || got[0] != 29 || got[1] != 1234 {
		t.Errorf("lookupGroups = %v, %v; want [29 1234]", got, err)
	}
	for _, bad := range []string{"nosuch", "bad"} {
		if _, err := lookupGroups([]string{bad}, group); err == nil || !strings.Contains(err.Error(), "unable to find group "+bad) {
			t.Errorf("lookupGroups(%s) = %v", bad, err)
		}
	}
}
