package ova

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The schema, from this package's directory (go test runs in it).
const schema = "schema/ovf-envelope.xsd"

func need(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			t.Fatalf("%s is missing: make deps installs it", c)
		}
	}
}

// streamDisk makes a streamOptimized VMDK of size bytes, some of them data.
func streamDisk(t *testing.T, size string) string {
	t.Helper()
	need(t, "qemu-img")
	dir := t.TempDir()
	raw, vmdk := filepath.Join(dir, "disk.raw"), filepath.Join(dir, "vmctl-disk1.vmdk")
	if err := exec.Command("truncate", "-s", size, raw).Run(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(raw, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(bytes.Repeat([]byte("vmctl appliance "), 4096), 1<<20)
	f.Close()
	out, err := exec.Command("qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, vmdk).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	return vmdk
}

func machine(disk string) Machine {
	return Machine{Name: "vmctl", Description: "test <appliance> & co", Version: "v1", CPUs: 2, MemoryMiB: 4096, Disk: disk}
}

func TestWriteVerify(t *testing.T) {
	need(t, "xmllint")
	disk := streamDisk(t, "96M")
	p := filepath.Join(t.TempDir(), "vmctl.ova")
	if err := Write(p, machine(disk)); err != nil {
		t.Fatal(err)
	}
	c, err := Verify(p, schema)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.Names, " "); got != "vmctl.ovf vmctl.mf vmctl-disk1.vmdk" {
		t.Errorf("entries %q", got)
	}
	if h := c.Disks["vmctl-disk1.vmdk"]; h.CapacityBytes() != 96<<20 || !h.StreamOptimized() {
		t.Errorf("disk header %+v", h)
	}
	if len(c.Manifest) != 2 {
		t.Errorf("manifest %v", c.Manifest)
	}
	for _, want := range []string{`ovf:capacity="100663296"`, `test &lt;appliance&gt; &amp; co`, `<rasd:VirtualQuantity>4096</rasd:VirtualQuantity>`} {
		if !bytes.Contains(c.Descriptor, []byte(want)) {
			t.Errorf("descriptor lacks %s", want)
		}
	}
	// qemu-img reads the packed disk as the same streamOptimized VMDK.
	ex := t.TempDir()
	if out, err := exec.Command("tar", "-C", ex, "-xf", p).CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	out, err := exec.Command("qemu-img", "info", filepath.Join(ex, "vmctl-disk1.vmdk")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "create type: streamOptimized") {
		t.Errorf("qemu-img info: %v\n%s", err, out)
	}
}

func TestWriteRefuses(t *testing.T) {
	dir := t.TempDir()
	flat := filepath.Join(dir, "flat.vmdk")
	if out, err := exec.Command("qemu-img", "create", "-f", "vmdk", flat, "16M").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	disk := streamDisk(t, "16M")
	for name, m := range map[string]Machine{
		"monolithicSparse": machine(flat),
		"no disk":          machine(filepath.Join(dir, "missing.vmdk")),
		"name":             {Name: "a/b", CPUs: 1, MemoryMiB: 512, Disk: disk},
		"cpus":             {Name: "x", CPUs: 0, MemoryMiB: 512, Disk: disk},
	} {
		out := filepath.Join(dir, "out.ova")
		if err := Write(out, m); err == nil {
			t.Errorf("%s: Write succeeded", name)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: left %s behind", name, out)
		}
	}
}

// rewrite copies an OVA, passing each entry through edit (which may
// change its body, or drop it by returning nil).
func rewrite(t *testing.T, src string, edit func(name string, body []byte) []byte) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(t.TempDir(), "edited.ova")
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tr, tw := tar.NewReader(in), tar.NewWriter(out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if body = edit(h.Name, body); body == nil {
			continue
		}
		h.Size = int64(len(body))
		tw.WriteHeader(h)
		tw.Write(body)
	}
	tw.Close()
	return dst
}

func TestVerifyCatches(t *testing.T) {
	need(t, "xmllint")
	good := filepath.Join(t.TempDir(), "vmctl.ova")
	if err := Write(good, machine(streamDisk(t, "32M"))); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		edit func(string, []byte) []byte
		want string
	}{
		"disk changed": {func(n string, b []byte) []byte {
			if strings.HasSuffix(n, ".vmdk") {
				b[len(b)-600] ^= 0xff
			}
			return b
		}, "manifest says"},
		"manifest dropped": {func(n string, b []byte) []byte {
			if strings.HasSuffix(n, ".mf") {
				return nil
			}
			return b
		}, "second file"},
		"descriptor size wrong": {func(n string, b []byte) []byte {
			if n == "vmctl.ovf" {
				return bytes.Replace(b, []byte(`ovf:size="`), []byte(`ovf:size="1`), 1)
			}
			return b
		}, "SHA-256"}, // the manifest catches it first
		"unknown manifest line": {func(n string, b []byte) []byte {
			if n == "vmctl.mf" {
				return append(b, "MD5(x)= 00\n"...)
			}
			return b
		}, "not SHA256"},
	}
	for name, c := range cases {
		_, err := Verify(rewrite(t, good, c.edit), schema)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
}

// The schema is strict where importers are: a descriptor that breaks it in
// any of these ways is refused.
func TestSchemaRefuses(t *testing.T) {
	need(t, "xmllint")
	ovf, err := Descriptor(machine("d.vmdk"), "d.vmdk", 1000, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateDescriptor(ovf, schema); err != nil {
		t.Fatalf("the good descriptor: %v", err)
	}
	breaks := map[string][2]string{
		// CIM's property order, which VMware's importer enforces.
		"RASD order": {"<rasd:ElementName>ideController0</rasd:ElementName>\n        <rasd:InstanceID>3</rasd:InstanceID>",
			"<rasd:InstanceID>3</rasd:InstanceID>\n        <rasd:ElementName>ideController0</rasd:ElementName>"},
		"no InstanceID":         {"<rasd:InstanceID>4</rasd:InstanceID>", ""},
		"unknown ResourceType":  {"<rasd:ResourceType>17</rasd:ResourceType>", "<rasd:ResourceType>99</rasd:ResourceType>"},
		"no Info":               {"<Info>The appliance's disk</Info>", ""},
		"no References":         {`<References>`, `<Refs>`},
		"OVF version":           {`ovf:version="1.0"`, `ovf:version="2.0"`},
		"disk without capacity": {`ovf:capacity="1073741824"`, ``},
		"unqualified attribute": {`ovf:diskId="vmdisk1"`, `diskId="vmdisk1"`},
	}
	for name, b := range breaks {
		bad := bytes.Replace(ovf, []byte(b[0]), []byte(b[1]), 1)
		if bytes.Equal(bad, ovf) {
			t.Fatalf("%s: the edit changed nothing", name)
		}
		if err := ValidateDescriptor(bad, schema); err == nil {
			t.Errorf("%s: validated", name)
		}
	}
}

func TestReadVMDKHeader(t *testing.T) {
	if _, err := readVMDKHeader(bytes.NewReader(make([]byte, 512))); err == nil {
		t.Error("zeros read as a VMDK")
	}
	hdr, err := ReadVMDKHeader(streamDisk(t, "8M"))
	if err != nil || !hdr.StreamOptimized() || hdr.CapacitySectors != 8<<11 {
		t.Errorf("%+v %v", hdr, err)
	}
}
