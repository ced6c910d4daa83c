package rootfs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmctl/vmctl/engine/images"
)

func TestChainIDs(t *testing.T) {
	a := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("a", 64)}
	b := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("b", 64)}
	got := ChainIDs([]v1.Hash{a, b})
	// The image spec's definition: sha256 of "<chain below> <diff ID>".
	sum := sha256.Sum256([]byte(a.String() + " " + b.String()))
	if len(got) != 2 || got[0] != a || got[1].Hex != hex.EncodeToString(sum[:]) {
		t.Fatalf("ChainIDs = %v", got)
	}
	if again := ChainIDs([]v1.Hash{a, b}); again[1] != got[1] || ChainIDs([]v1.Hash{b, a})[1] == got[1] {
		t.Error("chain IDs are not a function of the ordered diff IDs")
	}
}

func TestSplit(t *testing.T) {
	chains := make([]v1.Hash, 6)
	for i := range chains {
		chains[i] = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(rune('a'+i)), 64)}
	}
	at := func(ks ...int) map[v1.Hash]bool {
		m := map[v1.Hash]bool{}
		for _, k := range ks {
			m[chains[k-1]] = true
		}
		return m
	}
	for _, tc := range []struct {
		name        string
		flat, bases map[v1.Hash]bool
		budget      int
		want        int
	}{
		{"nothing known: one flattened disk", nil, nil, 4, 6},
		{"base known: flattened base, a disk per layer above", nil, at(3), 4, 3},
		{"base too low for the budget: flatten up to what fits", nil, at(1), 4, 3},
		{"the highest flattened prefix within budget", at(2, 4), nil, 4, 4},
		{"a flattened prefix beyond the budget is not used", at(1), nil, 3, 6},
		{"...but a base is", at(1), at(1), 3, 4},
		{"an existing prefix beats a base", at(4), at(2), 4, 4},
		{"the whole image is no base of itself", nil, at(6), 4, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := split(chains, tc.budget, func(c v1.Hash) bool { return tc.flat[c] }, tc.bases)
			if got != tc.want {
				t.Errorf("split = %d, want %d", got, tc.want)
			}
		})
	}
}

// baseLayer and the layers above it as a build makes them: every
// directory listed.
var baseLayer = []ent{
	dirEnt("bin", 0o755), reg("bin/busybox", "busybox binary", 0o755),
	dirEnt("etc", 0o755), reg("etc/old", "removed above", 0o644), reg("etc/kept", "kept", 0o644),
	dirEnt("opaque", 0o755), reg("opaque/hidden", "hidden", 0o644),
	dirEnt("gone", 0o755), reg("gone/file", "x", 0o644),
	dirEnt("tmp", 0o1777),
}

func appLayer(content string) []ent {
	return []ent{
		dirEnt("app", 0o750), reg("app/main", content, 0o755),
	}
}

func basesOf(imgs ...images.Image) Bases {
	return func(context.Context) (map[v1.Hash]bool, error) {
		m := map[v1.Hash]bool{}
		for _, img := range imgs {
			cf, err := img.Content().ConfigFile()
			if err != nil {
				return nil, err
			}
			c := ChainIDs(cf.RootFS.DiffIDs)
			m[c[len(c)-1]] = true
		}
		return m, nil
	}
}

// TestImageDisksStack: an image whose base is known gets the base's
// flattened disk and a disk per layer above it, in overlayfs's format; a
// rebuild that changes the last layer reuses every disk but that layer's.
func TestImageDisksStack(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	b := newBuilder(t)
	base := storedImage(t, baseLayer)
	changes := []ent{
		dirEnt("etc", 0o755), reg("etc/.wh.old", "", 0o644),
		dirEnt("opaque", 0o755), reg("opaque/.wh..wh..opq", "", 0o644), reg("opaque/new", "new", 0o644),
		reg(".wh.gone", "", 0o644),
		// Whiteout and entry in one layer: the entry is what the layer has.
		reg(".wh.tmp", "", 0o644), dirEnt("tmp", 0o1777), reg("tmp/fresh", "f", 0o644),
	}
	img := storedImage(t, baseLayer, changes, appLayer("v1"))
	disks, err := b.ImageDisks(ctx, img, 4, basesOf(base))
	if err != nil {
		t.Fatal(err)
	}
	if len(disks) != 3 {
		t.Fatalf("ImageDisks = %v; want the app layer, the changes layer and the flattened base", disks)
	}
	if want := flatPath(t, b, base); disks[2] != want {
		t.Errorf("bottom disk %s, want the base's flattened disk %s", disks[2], want)
	}
	for req, want := range map[string][]string{
		"stat /etc/old":           {"Type: character special", "Device major/minor number: 00:00"},
		"stat /gone":              {"Type: character special"},
		"ea_list /opaque":         {"trusted.overlay.opaque (1) = \"y\""},
		"ls /opaque":              {"new"},
		"stat /tmp":               {"Type: directory", "Mode:  01777"},
		"ea_list /tmp":            {"trusted.overlay.opaque (1) = \"y\""},
		"stat /etc":               {"Type: directory"},
		"cat /tmp/fresh":          {"f"},
		"ls /":                    {"etc"},
		"stat /opaque/hidden":     {"File not found"},
		"stat /bin":               {"File not found"},
		"features":                {"read-only"},
		"stat /etc/kept":          {"File not found"},
		"stat /opaque/.wh..wh..o": {"File not found"},
	} {
		out := debugfsAll(t, disks[1], req)
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("changes layer: debugfs %q: no %q in\n%s", req, w, out)
			}
		}
	}
	if out := debugfsAll(t, disks[0], "stat /app"); !strings.Contains(out, "Mode:  0750") {
		t.Errorf("app layer: /app is not the listed 0750 directory:\n%s", out)
	}
	if l := leftovers(t, b); len(l) != 0 {
		t.Errorf("leftovers: %v", l)
	}

	// The rebuild: the same layers below, a new last one.
	before := stats(t, disks[1:])
	again := storedImage(t, baseLayer, changes, appLayer("v2"))
	disks2, err := b.ImageDisks(ctx, again, 4, basesOf(base))
	if err != nil {
		t.Fatal(err)
	}
	if len(disks2) != 3 || disks2[0] == disks[0] || disks2[1] != disks[1] || disks2[2] != disks[2] {
		t.Fatalf("after a change to the last layer: %v, was %v; want only the top disk new", disks2, disks)
	}
	for i, st := range stats(t, disks2[1:]) {
		if !os.SameFile(st, before[i]) || !st.ModTime().Equal(before[i].ModTime()) {
			t.Errorf("%s was rewritten", disks2[i+1])
		}
	}
	if out := debugfsAll(t, disks2[0], "cat /app/main"); out != "v2" {
		t.Errorf("new top layer holds %q", out)
	}
	// With no base known and no flattened prefix, one flattened disk.
	other := newBuilder(t)
	if d, err := other.ImageDisks(ctx, img, 4, nil); err != nil || len(d) != 1 || d[0] != flatPath(t, other, img) {
		t.Errorf("ImageDisks without a base = %v, %v; want the one flattened disk", d, err)
	}
	// A budget of 1 is one flattened disk too.
	if d, err := b.ImageDisks(ctx, again, 1, basesOf(base)); err != nil || len(d) != 1 {
		t.Errorf("ImageDisks with a budget of 1 = %v, %v", d, err)
	}
	// Prune keeps what the live images use and deletes the rest.
	if _, err := b.Prune(ctx, []images.Image{base, again}); err != nil {
		t.Fatal(err)
	}
	for _, p := range disks2 {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("Prune removed a live disk: %v", err)
		}
	}
	if _, err := os.Stat(disks[0]); !os.IsNotExist(err) {
		t.Errorf("Prune kept the first build's top layer (%v)", err)
	}
}

// TestImageDisksUnfitAndEmptyLayers: a layer that implies directories it
// does not list is flattened with those below it; an empty layer takes no
// disk. What a layer is is remembered.
func TestImageDisksUnfitAndEmptyLayers(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	b := newBuilder(t)
	base := storedImage(t, baseLayer)
	implied := []ent{reg("etc/added", "no etc entry", 0o644)}
	img := storedImage(t, baseLayer, implied, nil, appLayer("v1"))
	disks, err := b.ImageDisks(ctx, img, 4, basesOf(base))
	if err != nil {
		t.Fatal(err)
	}
	cf, _ := img.Content().ConfigFile()
	chains := ChainIDs(cf.RootFS.DiffIDs)
	want := []string{b.diskFile(layerKey(chains[3]), ".ext4"), b.diskFile(flatKey(chains[1]), ".ext4")}
	if len(disks) != 2 || disks[0] != want[0] || disks[1] != want[1] {
		t.Fatalf("ImageDisks = %v\nwant the app layer over layers 1-2 flattened: %v", disks, want)
	}
	if out := debugfsAll(t, disks[1], "stat /etc"); !strings.Contains(out, "Mode:  0755") {
		t.Errorf("flattened part lost /etc's mode:\n%s", out)
	}
	for _, m := range []string{b.diskFile(layerKey(chains[1]), ".unfit"), b.diskFile(layerKey(chains[2]), ".empty")} {
		if _, err := os.Stat(m); err != nil {
			t.Errorf("marker %s: %v", filepath.Base(m), err)
		}
	}
	// A hard link to a lower layer's file cannot stand alone either.
	linked := []ent{dirEnt("bin", 0o755), hardlink("bin/sh", "bin/busybox")}
	img2 := storedImage(t, baseLayer, linked)
	if d, err := b.ImageDisks(ctx, img2, 4, basesOf(base)); err != nil || len(d) != 1 || d[0] != flatPath(t, b, img2) {
		t.Errorf("ImageDisks with a cross-layer hard link = %v, %v; want one flattened disk", d, err)
	}
}

// TestLayerHostile: a layer's own overlayfs attributes are dropped, and a
// whiteout that names "." or ".." is refused without leftovers.
func TestLayerHostile(t *testing.T) {
	needTools(t)
	ctx := context.Background()
	redirect := dirEnt("etc", 0o755)
	redirect.hdr.PAXRecords = map[string]string{
		"SCHILY.xattr.trusted.overlay.redirect": "/bin",
		"SCHILY.xattr.trusted.overlay.opaque":   "y",
		"SCHILY.xattr.user.kept":                "1",
	}
	b := newBuilder(t)
	base := storedImage(t, baseLayer)
	img := storedImage(t, baseLayer, []ent{redirect, reg("etc/x", "x", 0o644)})
	disks, err := b.ImageDisks(ctx, img, 4, basesOf(base))
	if err != nil || len(disks) != 2 {
		t.Fatalf("ImageDisks = %v, %v", disks, err)
	}
	out := debugfsAll(t, disks[0], "ea_list /etc")
	if strings.Contains(out, "trusted.overlay") || !strings.Contains(out, "user.kept") {
		t.Errorf("attributes of /etc on the layer disk:\n%s\nwant user.kept and no trusted.overlay.*", out)
	}
	for _, name := range []string{"etc/.wh..", "etc/.wh."} {
		bad := storedImage(t, baseLayer, []ent{dirEnt("etc", 0o755), reg(name, "", 0o644)})
		b := newBuilder(t)
		if d, err := b.ImageDisks(ctx, bad, 4, basesOf(base)); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("whiteout %q: ImageDisks = %v, %v; want a one-line error", name, d, err)
		}
		if l := leftovers(t, b); len(l) != 0 {
			t.Errorf("whiteout %q: leftovers %v", name, l)
		}
	}
}

// debugfsAll is debugfs with its stderr, where it reports a missing file.
func debugfsAll(t testing.TB, disk, req string) string {
	t.Helper()
	out, _ := debugfsCmd(disk, req).CombinedOutput()
	s := string(out)
	// debugfs's banner goes to stderr before the answer.
	if i := strings.Index(s, "\n"); strings.HasPrefix(s, "debugfs ") && i >= 0 {
		s = s[i+1:]
	}
	return s
}

func stats(t testing.TB, paths []string) []os.FileInfo {
	t.Helper()
	var out []os.FileInfo
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, st)
	}
	return out
}
