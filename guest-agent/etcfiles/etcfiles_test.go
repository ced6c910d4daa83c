package etcfiles

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestMounts(t *testing.T) {
	d := Dir{Base: "/run/x"}
	f := Files{Hosts: "127.0.0.1\tlocalhost\n", ResolvConf: "nameserver 172.30.0.1\n", Hostname: "web\n"}
	got := d.Mounts("c1", f, []specs.Mount{{Destination: "/etc"}, {Destination: "/etc/resolv.conf", Type: "bind", Source: "/vol"}})
	want := []specs.Mount{
		{Destination: "/etc/hosts", Type: "bind", Source: "/run/x/c1/hosts", Options: []string{"rbind"}},
		{Destination: "/etc/hostname", Type: "bind", Source: "/run/x/c1/hostname", Options: []string{"rbind"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Mounts = %+v, want %+v (the spec's own /etc/resolv.conf wins)", got, want)
	}
	if got := d.Mounts("c1", Files{}, nil); len(got) != 0 {
		t.Errorf("Mounts of no files = %+v, want none", got)
	}
	if got := (Dir{}).Mounts("c1", Files{Hostname: "h\n"}, nil); got[0].Source != "/run/vmctl/etc/c1/hostname" {
		t.Errorf("default directory: %+v", got)
	}
}

func TestWriteRemove(t *testing.T) {
	d := Dir{Base: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(d.Base, "c1"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Left by an earlier create of the same ID: replaced, not kept.
	if err := os.WriteFile(filepath.Join(d.Base, "c1", "resolv.conf"), []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := Files{Hosts: "10.0.0.2\tweb\n", Hostname: "web\n"}
	if err := d.Write("c1", f); err != nil {
		t.Fatal(err)
	}
	for _, m := range d.Mounts("c1", f, nil) {
		b, err := os.ReadFile(m.Source)
		want := map[string]string{"/etc/hosts": f.Hosts, "/etc/hostname": f.Hostname}[m.Destination]
		if err != nil || string(b) != want {
			t.Errorf("%s for %s = %q, %v; want %q", m.Source, m.Destination, b, err, want)
		}
		if st, err := os.Stat(m.Source); err != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("%s mode = %v, %v; want 0644 (readable by every user of the container)", m.Source, st.Mode(), err)
		}
	}
	if _, err := os.Stat(filepath.Join(d.Base, "c1", "resolv.conf")); !os.IsNotExist(err) {
		t.Errorf("stale resolv.conf kept: %v", err)
	}
	if err := d.Remove("c1"); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove("c1"); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.Base, "c1")); !os.IsNotExist(err) {
		t.Errorf("directory left after Remove: %v", err)
	}
	if err := d.Write("c2", Files{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d.Base, "c2")); !os.IsNotExist(err) {
		t.Errorf("Write of no files made a directory: %v", err)
	}
}

func TestRefuses(t *testing.T) {
	d := Dir{Base: t.TempDir()}
	for name, f := range map[string]Files{
		"too large": {Hosts: strings.Repeat("x", MaxSize+1)},
		"NUL byte":  {ResolvConf: "nameserver 10.0.0.1\x00"},
	} {
		if err := f.Check(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Check(%s) = %v, want ErrInvalid", name, err)
		}
		if err := d.Write("c1", f); !errors.Is(err, ErrInvalid) {
			t.Errorf("Write(%s) = %v, want ErrInvalid", name, err)
		}
	}
	for _, id := range []string{"", ".", "..", "a/b"} {
		if err := d.Write(id, Files{Hostname: "h\n"}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Write(id %q) = %v, want ErrInvalid", id, err)
		}
		if err := d.Remove(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("Remove(id %q) = %v, want ErrInvalid", id, err)
		}
	}
	if entries, _ := os.ReadDir(d.Base); len(entries) != 0 {
		t.Errorf("refused writes left %v", entries)
	}
}
