package build

// COPY and ADD: the files a step adds, read from the context (or a stage's
// or an image's file system) through an os.Root, hashed for the cache, and
// written as one layer tar.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/ulikunitz/xz"

	"github.com/vmctl/vmctl/engine/errs"
	"github.com/vmctl/vmctl/engine/rootfs"
)

// copySpec is a COPY or ADD after expansion.
type copySpec struct {
	sources      []string
	dest         string
	from         string
	chown, chmod string
	add          bool
	inline       []instructions.SourceContent
}

// readIgnore reads the context's .dockerignore, if any.
func readIgnore(dir string) (*patternmatcher.PatternMatcher, error) {
	f, err := os.Open(filepath.Join(dir, ".dockerignore"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		return nil, errs.New(errdefs.ErrInvalidArgument, "reading .dockerignore: %v", err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		return nil, errs.New(errdefs.ErrInvalidArgument, ".dockerignore: %v", err)
	}
	return pm, nil
}

// entry is one file of the layer a step makes.
type entry struct {
	hdr  tar.Header
	src  string // path under the source root, for a regular file
	root *os.Root
	data []byte // content given inline (a heredoc)
}

// source is where a step's files come from.
type source struct {
	root      *os.Root
	ignore    *patternmatcher.PatternMatcher
	keepOwner bool // owners as they are (another stage or image), not root
}

func (s source) ignored(rel string) bool {
	if s.ignore == nil || rel == "." {
		return false
	}
	m, err := s.ignore.MatchesOrParentMatches(filepath.FromSlash(rel))
	return err == nil && m
}

// copy runs a COPY or ADD.
func (r *run) copy(ctx context.Context, st *state, text string, c copySpec) error {
	what := "COPY"
	if c.add {
		what = "ADD"
	}
	src := source{ignore: r.ignore}
	dir := r.req.ContextDir
	if c.from != "" {
		var err error
		if dir, err = r.fromDir(ctx, c.from); err != nil {
			return err
		}
		src.ignore, src.keepOwner = nil, true
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	src.root = root
	files, err := r.files(ctx, st)
	if err != nil {
		return err
	}
	owner, err := parseChown(c.chown, files)
	if err != nil {
		return errs.New(errdefs.ErrInvalidArgument, "%s --chown=%s: %v", what, c.chown, err)
	}
	var mode *fs.FileMode
	if c.chmod != "" {
		m, err := strconv.ParseUint(c.chmod, 8, 32)
		if err != nil || m > 0o7777 {
			return errs.New(errdefs.ErrInvalidArgument, "%s --chmod=%s: not an octal mode", what, c.chmod)
		}
		fm := fs.FileMode(m)
		mode = &fm
	}

	type match struct {
		rel  string
		info fs.FileInfo
	}
	var matches []match
	for _, s := range c.sources {
		if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "git@") {
			if !c.add {
				return errs.New(errdefs.ErrInvalidArgument, "source can't be a URL for COPY")
			}
			return errs.New(errdefs.ErrNotImplemented, "ADD %s: remote sources are not supported: builds here have no network", s)
		}
		rel, ok := contextPath(s)
		if !ok {
			return errs.New(errdefs.ErrInvalidArgument, "%s failed: forbidden path outside the build context: %s", what, s)
		}
		var names []string
		if strings.ContainsAny(rel, "*?[") {
			found, err := fs.Glob(root.FS(), rel)
			if err != nil {
				return errs.New(errdefs.ErrInvalidArgument, "%s %s: %v", what, s, err)
			}
			for _, n := range found {
				if !src.ignored(n) {
					names = append(names, n)
				}
			}
			if len(names) == 0 {
				return errs.New(errdefs.ErrInvalidArgument, "%s failed: no source files were specified", what)
			}
		} else {
			names = []string{rel}
		}
		for _, n := range names {
			info, err := root.Stat(n)
			if err != nil || src.ignored(n) {
				return errs.New(errdefs.ErrInvalidArgument, "%s failed: file not found in build context or excluded by .dockerignore: stat %s: file does not exist", what, s)
			}
			matches = append(matches, match{n, info})
		}
	}

	dest := c.dest
	if !path.IsAbs(dest) {
		dest = path.Join("/", st.cfg.Config.WorkingDir, dest)
		if strings.HasSuffix(c.dest, "/") || c.dest == "." {
			dest += "/"
		}
	}
	destDir := strings.HasSuffix(dest, "/") || len(matches)+len(c.inline) > 1 || files.isDir(dest)
	dest = path.Clean(dest)

	var entries []entry
	add := func(e entry) {
		e.hdr.Name = strings.TrimPrefix(path.Clean(e.hdr.Name), "/")
		owner.apply(&e.hdr, src.keepOwner)
		if mode != nil && e.hdr.Typeflag != tar.TypeSymlink {
			e.hdr.Mode = int64(*mode)
		}
		entries = append(entries, e)
	}
	for _, m := range matches {
		switch {
		case m.info.IsDir():
			err := fs.WalkDir(root.FS(), m.rel, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if src.ignored(p) && p != m.rel {
					if d.IsDir() {
						return fs.SkipDir
					}
					return nil
				}
				info, err := d.Info()
				if err != nil {
					return err
				}
				under := strings.TrimPrefix(strings.TrimPrefix(p, m.rel), "/")
				if p == m.rel {
					under = ""
				}
				e, err := fileEntry(root, p, info, path.Join(dest, under))
				if err != nil || e == nil {
					return err
				}
				add(*e)
				return nil
			})
			if err != nil {
				return errs.New(errdefs.ErrInvalidArgument, "%s %s: %v", what, m.rel, err)
			}
		case c.add && m.info.Mode().IsRegular() && isArchive(root, m.rel):
			// A local archive is unpacked at the destination, its owners
			// kept, as docker build's ADD does.
			tmp, err := r.unpack(ctx, root, m.rel)
			if err != nil {
				return errs.New(errdefs.ErrInvalidArgument, "ADD %s: %v", m.rel, err)
			}
			aroot, err := os.OpenRoot(tmp)
			if err != nil {
				return err
			}
			defer aroot.Close()
			err = fs.WalkDir(aroot.FS(), ".", func(p string, d fs.DirEntry, err error) error {
				if err != nil || p == "." {
					return err
				}
				info, err := d.Info()
				if err != nil {
					return err
				}
				e, err := fileEntry(aroot, p, info, path.Join(dest, p))
				if err != nil || e == nil {
					return err
				}
				if !owner.set {
					e.hdr.Uid, e.hdr.Gid = statOwner(info)
				}
				entries = append(entries, *e)
				return nil
			})
			if err != nil {
				return errs.New(errdefs.ErrInvalidArgument, "ADD %s: %v", m.rel, err)
			}
		default:
			name := dest
			if destDir {
				name = path.Join(dest, path.Base(m.rel))
			}
			info, err := root.Lstat(m.rel)
			if err != nil {
				return err
			}
			if info.Mode()&fs.ModeSymlink != 0 {
				info = m.info // the named source is followed
			}
			e, err := fileEntry(root, m.rel, info, name)
			if err != nil {
				return errs.New(errdefs.ErrInvalidArgument, "%s %s: %v", what, m.rel, err)
			}
			if e != nil {
				add(*e)
			}
		}
	}
	for _, in := range c.inline {
		name := dest
		if destDir {
			name = path.Join(dest, in.Path)
		}
		data := in.Data
		if in.Expand {
			// An unquoted heredoc delimiter: variables expand, quotes and
			// backslashes stay as written.
			var err error
			if data, err = r.expandRaw(st, data); err != nil {
				return errs.New(errdefs.ErrInvalidArgument, "%s: %v", text, err)
			}
		}
		add(entry{hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}, data: []byte(data)})
	}
	entries = withParents(entries, files, owner)
	kind := "file"
	if len(matches) == 1 && matches[0].info.IsDir() {
		kind = "dir"
	} else if len(matches)+len(c.inline) > 1 {
		kind = "multi"
	}
	return r.layerStep(ctx, st, text, func(sum string) string {
		return fmt.Sprintf("/bin/sh -c #(nop) %s %s:%s in %s ", what, kind, strings.TrimPrefix(sum, "sha256:"), c.dest)
	}, entries)
}

// layerStep commits a step that adds entries as a layer (written only on
// a cache miss: the key needs their content hash, not the layer);
// createdBy gives the history line from the hash.
func (r *run) layerStep(ctx context.Context, st *state, text string, createdBy func(sum string) string, entries []entry) error {
	sum, err := hashEntries(entries)
	if err != nil {
		return err
	}
	cfg := st.cfg.DeepCopy()
	key := cacheKey(st.id, text, cfg, sum)
	if r.fromCache(ctx, st, key, cfg) {
		return nil
	}
	layerPath, err := r.writeLayer(entries)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromFile(layerPath)
	if err != nil {
		return err
	}
	return r.commitLayer(ctx, st, cfg, layer, createdBy(sum), key)
}

// commitLayer commits a step that adds layer, and moves st to it.
func (r *run) commitLayer(ctx context.Context, st *state, cfg *v1.ConfigFile, layer v1.Layer, createdBy, key string) error {
	img, err := r.commit(ctx, st, cfg, layer, createdBy, key)
	if err != nil {
		return err
	}
	st.id, st.img, st.key = img.ID, img.Content(), key
	if st.cfg, err = img.Content().ConfigFile(); err != nil {
		return err
	}
	return nil
}

// fileEntry is the layer entry for the file at p under root, named name;
// nil for what a layer cannot hold (sockets).
func fileEntry(root *os.Root, p string, info fs.FileInfo, name string) (*entry, error) {
	link := ""
	if info.Mode()&fs.ModeSymlink != 0 {
		var err error
		if link, err = root.Readlink(p); err != nil {
			return nil, err
		}
	}
	if info.Mode()&fs.ModeSocket != 0 {
		return nil, nil
	}
	hdr, err := tar.FileInfoHeader(info, link)
	if err != nil {
		return nil, err
	}
	hdr.Name = name
	hdr.Uname, hdr.Gname = "", ""
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	hdr.Uid, hdr.Gid = statOwner(info)
	hdr.Format = tar.FormatPAX
	e := &entry{hdr: *hdr, root: root}
	if hdr.Typeflag == tar.TypeReg {
		e.src = p
	}
	return e, nil
}

func statOwner(info fs.FileInfo) (int, int) {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return 0, 0
}

// owner is --chown's result.
type owner struct {
	set      bool
	uid, gid int
}

// apply gives hdr its owner: --chown's, else the source's (another stage
// or image) or root (the context).
func (o owner) apply(hdr *tar.Header, keep bool) {
	switch {
	case o.set:
		hdr.Uid, hdr.Gid = o.uid, o.gid
	case !keep:
		hdr.Uid, hdr.Gid = 0, 0
	}
}

// parseChown resolves "user[:group]", by number or by the names in the
// image's /etc/passwd and /etc/group.
func parseChown(spec string, files *tree) (owner, error) {
	if spec == "" {
		return owner{}, nil
	}
	u, g, hasGroup := strings.Cut(spec, ":")
	uid, primary, err := lookupID(u, files.passwd, 2, 3)
	if err != nil {
		return owner{}, fmt.Errorf("unable to find user %s: %w", u, err)
	}
	gid := primary
	if hasGroup {
		if gid, _, err = lookupID(g, files.group, 2, -1); err != nil {
			return owner{}, fmt.Errorf("unable to find group %s: %w", g, err)
		}
	}
	return owner{set: true, uid: uid, gid: gid}, nil
}

// lookupID finds name (or a number) in a passwd-like file: field idField
// is its ID, field extraField (if not -1) another number (the primary
// group). A number not in the file stands for itself (with itself as the
// primary group).
func lookupID(name string, file []byte, idField, extraField int) (int, int, error) {
	if n, err := strconv.Atoi(name); err == nil && n >= 0 {
		for _, f := range fields(file) {
			if len(f) > max(idField, extraField) && f[idField] == name && extraField >= 0 {
				g, _ := strconv.Atoi(f[extraField])
				return n, g, nil
			}
		}
		return n, n, nil
	}
	for _, f := range fields(file) {
		if len(f) > max(idField, extraField) && f[0] == name {
			id, err := strconv.Atoi(f[idField])
			if err != nil {
				break
			}
			extra := id
			if extraField >= 0 {
				extra, _ = strconv.Atoi(f[extraField])
			}
			return id, extra, nil
		}
	}
	return 0, 0, errors.New("no matching entries in passwd file")
}

func fields(file []byte) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(file))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}

// withParents sorts entries (a later one of the same name wins) and adds
// the directories above them: as the image has them, as Docker's layers
// list them (and as a layer must to be stacked as a lower directory of
// its own), or, where the image lacks them, owned by --chown's owner or
// root, mode 0755.
func withParents(entries []entry, files *tree, o owner) []entry {
	byName := map[string]int{}
	var out []entry
	for _, e := range entries {
		if e.hdr.Name == "" || e.hdr.Name == "." {
			continue // the root itself is the image's
		}
		if i, ok := byName[e.hdr.Name]; ok {
			out[i] = e
			continue
		}
		byName[e.hdr.Name] = len(out)
		out = append(out, e)
	}
	for _, e := range append([]entry(nil), out...) {
		for dir := path.Dir(e.hdr.Name); dir != "." && dir != "/"; dir = path.Dir(dir) {
			if _, ok := byName[dir]; ok {
				continue
			}
			var h tar.Header
			if have := files.dir("/" + dir); have != nil {
				h = *have
				h.Name, h.Format = dir, tar.FormatPAX
			} else {
				h = tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, Format: tar.FormatPAX, ModTime: e.hdr.ModTime}
				o.apply(&h, false)
			}
			byName[dir] = len(out)
			out = append(out, entry{hdr: h})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].hdr.Name < out[j].hdr.Name })
	return out
}

// hashEntries is the content hash of the cache key: every entry's name,
// type, mode, owner, link and content, not its mtime.
func hashEntries(entries []entry) (string, error) {
	h := sha256.New()
	for _, e := range entries {
		fmt.Fprintf(h, "%s\x00%c\x00%o\x00%d:%d\x00%s\x00%d:%d\x00", e.hdr.Name, e.hdr.Typeflag, e.hdr.Mode, e.hdr.Uid, e.hdr.Gid, e.hdr.Linkname, e.hdr.Devmajor, e.hdr.Devminor)
		if e.hdr.Typeflag == tar.TypeReg {
			if err := e.content(h); err != nil {
				return "", err
			}
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func (e entry) content(w io.Writer) error {
	if e.src == "" {
		_, err := w.Write(e.data)
		return err
	}
	f, err := e.root.Open(e.src)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, f)
	if err == nil && n != e.hdr.Size {
		err = fmt.Errorf("%s changed while the build read it", e.src)
	}
	return err
}

// writeLayer writes entries as an uncompressed layer tar in the build's
// scratch space.
func (r *run) writeLayer(entries []entry) (string, error) {
	dir, err := r.tempDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "layer.tar")
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	tw := tar.NewWriter(bw)
	for _, e := range entries {
		hdr := e.hdr
		if err := tw.WriteHeader(&hdr); err != nil {
			return "", err
		}
		if hdr.Typeflag == tar.TypeReg {
			if err := e.content(tw); err != nil {
				return "", err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := bw.Flush(); err != nil {
		return "", err
	}
	return p, f.Close()
}

func (r *run) tempDir() (string, error) {
	if err := os.MkdirAll(r.b.TempDir, 0o700); err != nil {
		return "", err
	}
	d, err := os.MkdirTemp(r.b.TempDir, "step-")
	if err != nil {
		return "", err
	}
	r.temps = append(r.temps, d)
	return d, nil
}

// isArchive says whether a file is a tar, plain or compressed (gzip,
// bzip2, xz), by its first bytes.
func isArchive(root *os.Root, p string) bool {
	f, err := root.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	r, err := decompress(bufio.NewReader(f))
	if err != nil {
		return false
	}
	_, err = tar.NewReader(r).Next()
	return err == nil
}

// Decompress reads a tar sent plain or compressed with gzip, bzip2 or xz,
// as docker build accepts contexts and ADD archives.
func Decompress(r io.Reader) (io.Reader, error) { return decompress(bufio.NewReader(r)) }

func decompress(br *bufio.Reader) (io.Reader, error) {
	head, _ := br.Peek(6)
	switch {
	case bytes.HasPrefix(head, []byte{0x1f, 0x8b}):
		return gzip.NewReader(br)
	case bytes.HasPrefix(head, []byte("BZh")):
		return bzip2.NewReader(br), nil
	case bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return xz.NewReader(br)
	}
	return br, nil
}

// unpack extracts an archive of the context into scratch space, with the
// disk builds' extractor (no entry leaves the directory).
func (r *run) unpack(ctx context.Context, root *os.Root, p string) (string, error) {
	f, err := root.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	rd, err := decompress(bufio.NewReader(f))
	if err != nil {
		return "", err
	}
	dir, err := r.tempDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "unpacked")
	if err := os.Mkdir(out, 0o755); err != nil {
		return "", err
	}
	if _, err := rootfs.Extract(ctx, rd, out); err != nil {
		return "", err
	}
	return out, nil
}

// fromDir is the file system of COPY --from's stage or image, unpacked
// in scratch space once per build.
func (r *run) fromDir(ctx context.Context, from string) (string, error) {
	var img v1.Image
	var id string
	if st, ok := r.built[strings.ToLower(from)]; ok {
		img, id = st.img, st.id
	} else if _, isIndex := strconv.Atoi(from); isIndex == nil {
		return "", errs.New(errdefs.ErrInvalidArgument, "COPY --from=%s: no stage %s before this one", from, from)
	} else {
		got, err := r.image(ctx, from)
		if err != nil {
			return "", err
		}
		img, id = got.Content(), got.ID
	}
	key := "from:" + id
	if d, ok := r.unpacked[key]; ok {
		return d, nil
	}
	dir, err := r.tempDir()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "rootfs")
	if err := os.Mkdir(out, 0o755); err != nil {
		return "", err
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	if _, err := rootfs.Extract(ctx, rc, out); err != nil {
		return "", fmt.Errorf("unpacking %s for COPY --from: %w", from, err)
	}
	r.unpacked[key] = out
	return out, nil
}

// tree indexes an image's file system: what each path is, and the
// passwd and group files --chown reads.
type tree struct {
	layers        string                 // the diff IDs it was made from
	dirs          map[string]*tar.Header // by absolute path; the root's is nil
	passwd, group []byte
}

func (t *tree) isDir(p string) bool {
	if t == nil {
		return false
	}
	_, ok := t.dirs[path.Clean(p)]
	return ok
}

// dir is the image's entry of the directory at p, nil if it has none.
func (t *tree) dir(p string) *tar.Header {
	if t == nil {
		return nil
	}
	return t.dirs[path.Clean(p)]
}

// files returns the index of st's file system, made once per layer set.
func (r *run) files(ctx context.Context, st *state) (*tree, error) {
	key := layersKey(st.cfg)
	if st.files != nil && st.files.layers == key {
		return st.files, nil
	}
	t := &tree{layers: key, dirs: map[string]*tar.Header{"/": nil}}
	rc := mutate.Extract(st.img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the image's file system: %w", err)
		}
		name := path.Clean("/" + hdr.Name)
		if hdr.Typeflag == tar.TypeDir {
			t.dirs[name] = &tar.Header{Typeflag: tar.TypeDir, Mode: hdr.Mode, Uid: hdr.Uid, Gid: hdr.Gid,
				ModTime: hdr.ModTime, PAXRecords: xattrRecords(hdr)}
		}
		if (name == "/etc/passwd" || name == "/etc/group") && hdr.Typeflag == tar.TypeReg && hdr.Size < 1<<20 {
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			if name == "/etc/passwd" {
				t.passwd = b
			} else {
				t.group = b
			}
		}
	}
	st.files = t
	return t, nil
}

func layersKey(cfg *v1.ConfigFile) string {
	var h hash.Hash = sha256.New()
	for _, d := range cfg.RootFS.DiffIDs {
		io.WriteString(h, d.String())
	}
	return hex.EncodeToString(h.Sum(nil))
}

// xattrRecords are the extended attributes among an entry's PAX records.
func xattrRecords(hdr *tar.Header) map[string]string {
	var out map[string]string
	for k, v := range hdr.PAXRecords {
		if strings.HasPrefix(k, "SCHILY.xattr.") {
			if out == nil {
				out = map[string]string{}
			}
			out[k] = v
		}
	}
	return out
}
