package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/moby/moby/api/types/container"
)

// --security-opt seccomp=FILE sends the file's JSON, compacted, as the
// docker CLI does; names and the other options pass as they are.
func TestSecurityOptsReadProfiles(t *testing.T) {
	dir := t.TempDir()
	profile := filepath.Join(dir, "deny-mkdir.json")
	if err := os.WriteFile(profile, []byte("{\n  \"defaultAction\": \"SCMP_ACT_ALLOW\",\n  \"syscalls\": []\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	notJSON := filepath.Join(dir, "profile.txt")
	if err := os.WriteFile(notJSON, []byte("allow everything"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in, want []string
		err      string
	}{
		{in: []string{"no-new-privileges", "seccomp=" + profile},
			want: []string{"no-new-privileges", `seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}`}},
		{in: []string{"seccomp:" + profile}, want: []string{`seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}`}},
		{in: []string{"seccomp=unconfined", "seccomp=builtin", "apparmor=unconfined"}, want: []string{"seccomp=unconfined", "seccomp=builtin", "apparmor=unconfined"}},
		{in: []string{"seccomp=" + filepath.Join(dir, "missing.json")}, err: "--security-opt seccomp=" + filepath.Join(dir, "missing.json") + ": open "},
		{in: []string{"seccomp=" + notJSON}, err: "the profile is not JSON"},
	} {
		got, err := securityOpts(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("securityOpts(%q) = %v, want an error with %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("securityOpts(%q) = %q, %v, want %q", tc.in, got, err, tc.want)
		}
	}
	// run and create send them so, with --privileged.
	s := securityFlags{privileged: true, securityOpt: []string{"seccomp=" + profile}}
	var hc container.HostConfig
	if err := s.apply(&hc); err != nil {
		t.Fatal(err)
	}
	if !hc.Privileged || !reflect.DeepEqual(hc.SecurityOpt, []string{`seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[]}`}) {
		t.Errorf("HostConfig privileged %v security options %q", hc.Privileged, hc.SecurityOpt)
	}
}
