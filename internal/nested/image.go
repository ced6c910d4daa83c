package nested

import (
	"bytes"
	"debug/elf"
	_ "embed"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/vmctl/vmctl/internal/initramfs"
)

//go:embed init.sh
var initScript []byte

// baseDirs are the directories internal/initramfs puts in every image; the
// archive must not list them twice.
var baseDirs = map[string]bool{"dev": true, "proc": true, "sys": true, "run": true, "tmp": true, "mnt": true}

// WriteImage writes the L1 initramfs for cfg to w: busybox, the KVM
// modules, init.sh as /init, the plan, the scenarios and cfg.Files.
func WriteImage(w io.Writer, cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	img, err := cfg.image()
	if err != nil {
		return err
	}
	if err := initramfs.Write(w, img); err != nil {
		return fmt.Errorf("nested: %w", err)
	}
	return nil
}

func (cfg Config) image() (initramfs.Image, error) {
	img := initramfs.Image{Init: initScript}
	dirs := map[string]bool{}
	add := func(p string, mode os.FileMode, data []byte) {
		for d := path.Dir(p); d != "." && !dirs[d] && !baseDirs[d]; d = path.Dir(d) {
			dirs[d] = true
		}
		img.Files = append(img.Files, initramfs.File{Path: p, Mode: mode, Data: data})
	}

	bb, err := os.ReadFile(cfg.Busybox)
	if err != nil {
		return img, fmt.Errorf("nested: busybox: %w", err)
	}
	if err := checkStatic(bb); err != nil {
		return img, fmt.Errorf("nested: %s: %w (install busybox-static)", cfg.Busybox, err)
	}
	add("bin/busybox", 0o755, bb)
	for i, m := range cfg.Kernel.Modules {
		ko, err := os.ReadFile(cfg.Kernel.ModuleFiles[i])
		if err != nil {
			return img, fmt.Errorf("nested: module %s: %w", m, err)
		}
		add("nested/modules/"+m+".ko", 0o644, ko)
	}
	add("nested/plan", 0o644, cfg.plan())
	for _, s := range cfg.Scenarios {
		add("nested/scenarios/"+s.Name+".sh", 0o644, []byte(s.Script))
	}
	seen := map[string]bool{}
	for _, f := range img.Files {
		seen[f.Path] = true
	}
	for _, f := range cfg.Files {
		p, err := imagePath(f.Path)
		if err != nil {
			return img, err
		}
		if seen[p] {
			return img, fmt.Errorf("nested: file %s is added twice or clashes with the harness's own files", p)
		}
		seen[p] = true
		data, mode := f.Data, f.Mode
		if f.Source != "" {
			if data, err = os.ReadFile(f.Source); err != nil {
				return img, fmt.Errorf("nested: %w", err)
			}
			if mode == 0 {
				mode = 0o644
				if fi, err := os.Stat(f.Source); err == nil && fi.Mode()&0o111 != 0 {
					mode = 0o755
				}
			}
		}
		if mode == 0 {
			mode = 0o644
		}
		if mode&0o111 != 0 && bytes.HasPrefix(data, []byte(elf.ELFMAG)) && !f.Dynamic {
			if err := checkStatic(data); err != nil {
				return img, fmt.Errorf("nested: %s: %w; L1 has no shared libraries", p, err)
			}
		}
		add(p, mode.Perm(), data)
	}
	// /bin etc. are created by init.sh for busybox's applet links; parents
	// must precede children in the archive.
	for _, d := range []string{"sbin", "usr", "usr/bin", "usr/sbin", "nested/bin"} {
		dirs[d] = true
	}
	img.Dirs = make([]string, 0, len(dirs))
	for d := range dirs {
		img.Dirs = append(img.Dirs, d)
	}
	slices.SortFunc(img.Dirs, func(a, b string) int {
		if c := strings.Count(a, "/") - strings.Count(b, "/"); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	return img, nil
}

// plan is /nested/plan, sourced by init.sh. Names and durations are
// validated, so nothing here needs shell quoting beyond the double quotes.
func (cfg Config) plan() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "NESTED_DEADLINE=%d\n", seconds1(cfg.guestDeadline()))
	fmt.Fprintf(&b, "NESTED_MODULES=%q\n", strings.Join(cfg.Kernel.Modules, " "))
	var specs []string
	for _, s := range cfg.Scenarios {
		specs = append(specs, fmt.Sprintf("%s:%d", s.Name, seconds1(s.Timeout)))
	}
	fmt.Fprintf(&b, "NESTED_SCENARIOS=%q\n", strings.Join(specs, " "))
	return b.Bytes()
}

// imagePath validates a path inside L1 and returns it relative to /.
func imagePath(p string) (string, error) {
	c := path.Clean(strings.TrimPrefix(p, "/"))
	if c == "." || c == ".." || strings.HasPrefix(c, "../") || c == "init" {
		return "", fmt.Errorf("nested: invalid path %q inside L1", p)
	}
	return c, nil
}

// checkStatic rejects dynamically linked executables: L1 has no libraries.
func checkStatic(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("dynamically linked")
		}
	}
	return nil
}
