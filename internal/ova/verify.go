package ova

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Contents is an OVA as Verify read it.
type Contents struct {
	Names      []string          // the tar's entries, in order
	Sizes      map[string]int64  // each entry's size
	Descriptor []byte            // the .ovf
	Manifest   map[string]string // file name -> SHA-256 (hex), from the .mf
	Disks      map[string]VMDKHeader
}

// SchemaDir is where this package's OVF 1.0 schema lives, relative to the
// repository's root.
const SchemaDir = "internal/ova/schema"

// Verify checks an OVA as an importer does, and more strictly: the
// descriptor comes first and the manifest second; the manifest names every
// other file with its SHA-256, and they match; every file the descriptor
// references is in the package with the size it says; every disk is a
// streamOptimized VMDK of the capacity the descriptor says; the descriptor
// validates against the OVF 1.0 schema (a schema file, see
// ValidateDescriptor).
func Verify(path, schema string) (*Contents, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c := &Contents{Sizes: map[string]int64{}, Disks: map[string]VMDKHeader{}}
	sums := map[string]string{}
	heads := map[string][]byte{} // the first 1 MiB of each file: a VMDK's header and descriptor
	var mf []byte
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("ova: %s: %w", path, err)
		}
		if h.Typeflag != tar.TypeReg || strings.Contains(h.Name, "/") {
			return nil, fmt.Errorf("ova: entry %q: only plain files at the top level belong in an OVA", h.Name)
		}
		if _, dup := c.Sizes[h.Name]; dup {
			return nil, fmt.Errorf("ova: %q twice", h.Name)
		}
		c.Names = append(c.Names, h.Name)
		c.Sizes[h.Name] = h.Size
		sum := sha256.New()
		var head bytes.Buffer
		n, err := io.Copy(io.MultiWriter(sum, &limitWriter{&head, 1 << 20}), tr)
		if err != nil {
			return nil, fmt.Errorf("ova: %s: %w", h.Name, err)
		}
		if n != h.Size {
			return nil, fmt.Errorf("ova: %s: %d of %d bytes", h.Name, n, h.Size)
		}
		sums[h.Name] = hex.EncodeToString(sum.Sum(nil))
		heads[h.Name] = head.Bytes()
		switch {
		case len(c.Names) == 1 && strings.HasSuffix(h.Name, ".ovf"):
			c.Descriptor = head.Bytes()
			if int64(len(c.Descriptor)) != h.Size {
				return nil, fmt.Errorf("ova: descriptor of %d bytes is too big", h.Size)
			}
		case len(c.Names) == 2 && strings.HasSuffix(h.Name, ".mf"):
			mf = head.Bytes()
		}
	}
	if c.Descriptor == nil {
		return nil, errors.New("ova: the first file is not the .ovf descriptor")
	}
	if mf == nil {
		return nil, errors.New("ova: the second file is not the .mf manifest")
	}
	if c.Manifest, err = parseManifest(mf); err != nil {
		return nil, err
	}
	for _, name := range c.Names[2:] {
		if _, ok := c.Manifest[name]; !ok {
			return nil, fmt.Errorf("ova: the manifest does not list %s", name)
		}
	}
	for name, want := range c.Manifest {
		got, ok := sums[name]
		switch {
		case !ok:
			return nil, fmt.Errorf("ova: the manifest lists %s, which is not in the package", name)
		case got != want:
			return nil, fmt.Errorf("ova: %s: SHA-256 %s, the manifest says %s", name, got, want)
		}
	}
	if _, ok := c.Manifest[c.Names[0]]; !ok {
		return nil, errors.New("ova: the manifest does not list the descriptor")
	}

	var env envelope
	if err := xml.Unmarshal(c.Descriptor, &env); err != nil {
		return nil, fmt.Errorf("ova: descriptor: %w", err)
	}
	hrefs := map[string]string{} // file id -> href
	for _, file := range env.Files {
		size, ok := c.Sizes[file.Href]
		if !ok {
			return nil, fmt.Errorf("ova: the descriptor references %s, which is not in the package", file.Href)
		}
		if file.Size != "" && file.Size != strconv.FormatInt(size, 10) {
			return nil, fmt.Errorf("ova: %s is %d bytes, the descriptor says %s", file.Href, size, file.Size)
		}
		hrefs[file.ID] = file.Href
	}
	if len(env.Disks) == 0 {
		return nil, errors.New("ova: the descriptor has no disk")
	}
	for _, d := range env.Disks {
		href, ok := hrefs[d.FileRef]
		if !ok {
			return nil, fmt.Errorf("ova: disk %s refers to file %q, which References lacks", d.ID, d.FileRef)
		}
		hdr, err := readVMDKHeader(bytes.NewReader(heads[href]))
		if err != nil {
			return nil, fmt.Errorf("ova: %s: %w", href, err)
		}
		if d.Format != StreamOptimizedFormat || !hdr.StreamOptimized() {
			return nil, fmt.Errorf("ova: %s: not a streamOptimized VMDK (format %q, createType %q)", href, d.Format, hdr.CreateType)
		}
		if d.Capacity != strconv.FormatUint(hdr.CapacityBytes(), 10) {
			return nil, fmt.Errorf("ova: %s holds %d bytes, the descriptor says %s", href, hdr.CapacityBytes(), d.Capacity)
		}
		c.Disks[href] = hdr
	}
	if err := ValidateDescriptor(c.Descriptor, schema); err != nil {
		return nil, err
	}
	return c, nil
}

// The parts of the descriptor Verify cross-checks.
type envelope struct {
	Files []struct {
		ID   string `xml:"id,attr"`
		Href string `xml:"href,attr"`
		Size string `xml:"size,attr"`
	} `xml:"References>File"`
	Disks []struct {
		ID       string `xml:"diskId,attr"`
		FileRef  string `xml:"fileRef,attr"`
		Capacity string `xml:"capacity,attr"`
		Format   string `xml:"format,attr"`
	} `xml:"DiskSection>Disk"`
}

var manifestLine = regexp.MustCompile(`^SHA256\(([^()/]+)\)= ([0-9a-f]{64})$`)

func parseManifest(mf []byte) (map[string]string, error) {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(mf))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" {
			continue
		}
		g := manifestLine.FindStringSubmatch(line)
		if g == nil {
			return nil, fmt.Errorf("ova: manifest line %q is not SHA256(file)= digest", line)
		}
		m[g[1]] = g[2]
	}
	if len(m) == 0 {
		return nil, errors.New("ova: empty manifest")
	}
	return m, nil
}

// ValidateDescriptor validates an OVF descriptor with xmllint against
// schema: this package's (SchemaDir/ovf-envelope.xsd) or DMTF's own
// dsp8023_1.0.0.xsd. xmllint never fetches anything (--nonet).
func ValidateDescriptor(ovf []byte, schema string) error {
	dir, err := os.MkdirTemp("", "ovf-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "descriptor.ovf")
	if err := os.WriteFile(p, ovf, 0o644); err != nil {
		return err
	}
	out, err := exec.Command("xmllint", "--noout", "--nonet", "--schema", schema, p).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ova: the descriptor does not validate against %s: %s", schema,
			strings.TrimSpace(strings.ReplaceAll(string(out), p, "descriptor")))
	}
	return nil
}

// limitWriter keeps the first n bytes written to it and drops the rest.
type limitWriter struct {
	b *bytes.Buffer
	n int
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if room := w.n - w.b.Len(); room > 0 {
		w.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
