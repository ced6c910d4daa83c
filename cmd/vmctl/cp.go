package main

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newCpCommand(g *globalOptions) *cobra.Command {
	var archive bool
	cmd := &cobra.Command{
		Use:   "cp [-a] CONTAINER:SRC DEST|-  or  cp [-a] SRC|- CONTAINER:DEST",
		Short: "Copy files between a running container and this machine",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			from, to := splitCopyArg(args[0]), splitCopyArg(args[1])
			switch {
			case from.container != "" && to.container != "":
				return errors.New("copying between containers is not supported")
			case from.container == "" && to.container == "":
				return errors.New("must specify at least one container source")
			}
			return daemonFailure(g.withEngine("cp", false, func(r *remote) error {
				if from.container != "" {
					return r.copyOut(cmd.Context(), from.container, from.path, to.path)
				}
				return r.copyIn(cmd.Context(), from.path, to.container, to.path, archive)
			}))
		},
	}
	cmd.Flags().BoolVarP(&archive, "archive", "a", false, "keep the files' owners (UID and GID)")
	return cmd
}

type copyArg struct{ container, path string }

// splitCopyArg reads CONTAINER:PATH; a local path with a colon must start
// with / or . (as docker cp reads it).
func splitCopyArg(s string) copyArg {
	if strings.HasPrefix(s, "/") || strings.HasPrefix(s, ".") {
		return copyArg{path: s}
	}
	if c, p, ok := strings.Cut(s, ":"); ok {
		return copyArg{container: c, path: p}
	}
	return copyArg{path: s}
}

// copyOut writes the container's src to dst: into dst if it is a
// directory, as dst otherwise; "-" writes the tar to stdout.
func (r *remote) copyOut(ctx context.Context, ctr, src, dst string) error {
	res, err := r.api.CopyFromContainer(ctx, ctr, client.CopyFromContainerOptions{SourcePath: src})
	if err != nil {
		return r.fail(err)
	}
	defer res.Content.Close()
	if dst == "-" {
		if term.IsTerminal(int(os.Stdout.Fd())) {
			return errors.New("refusing to write a tar to a terminal: redirect stdout")
		}
		_, err := io.Copy(os.Stdout, res.Content)
		return err
	}
	dir, rename := dst, ""
	if info, err := os.Stat(dst); err != nil || !info.IsDir() {
		if err == nil && res.Stat.Mode.IsDir() {
			return fmt.Errorf("cannot copy a directory onto the file %s", dst)
		}
		dir, rename = filepath.Dir(dst), filepath.Base(dst)
	}
	return extractLocal(res.Content, dir, res.Stat.Name, rename)
}

// extractLocal unpacks a tar from a container into dir, through an
// os.Root (no entry leaves it), its top entry named rename if set.
func extractLocal(rd io.Reader, dir, top, rename string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("destination %s: %w", dir, unwrapPathError(err))
	}
	defer root.Close()
	tr := tar.NewReader(rd)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading the engine's tar: %w", err)
		}
		name := strings.TrimSuffix(h.Name, "/")
		if name == "" || path.IsAbs(name) || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("the engine's tar holds %q", h.Name)
		}
		if rename != "" {
			if first, rest, _ := strings.Cut(name, "/"); first == top || top == "/" {
				name = path.Join(rename, rest)
			}
		}
		mode := fs.FileMode(h.Mode) & fs.ModePerm
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, mode|0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			root.Remove(name)
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
			root.Chtimes(name, h.ModTime, h.ModTime)
		case tar.TypeSymlink:
			root.Remove(name)
			if err := root.Symlink(h.Linkname, name); err != nil {
				return err
			}
		}
	}
}

// copyIn sends src (a file or directory here, or a tar on stdin for "-")
// into the container at dst: into dst if it is a directory there, as dst
// otherwise.
func (r *remote) copyIn(ctx context.Context, src, ctr, dst string, keepOwners bool) error {
	opts := client.CopyToContainerOptions{DestinationPath: dst, CopyUIDGID: keepOwners}
	if src == "-" {
		opts.Content = os.Stdin
		if _, err := r.api.CopyToContainer(ctx, ctr, opts); err != nil {
			return r.fail(err)
		}
		return nil
	}
	info, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("%s: %w", src, unwrapPathError(err))
	}
	name := filepath.Base(src)
	st, err := r.api.ContainerStatPath(ctx, ctr, client.ContainerStatPathOptions{Path: dst})
	switch {
	case err == nil && st.Stat.Mode.IsDir():
	case err == nil || errdefs.IsNotFound(err):
		// Not a directory there (or nothing): src becomes dst.
		if err == nil && info.IsDir() {
			return fmt.Errorf("cannot copy a directory onto the file %s", dst)
		}
		opts.DestinationPath, name = path.Dir(dst), path.Base(dst)
	default:
		return r.fail(err)
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarTree(pw, src, name)) }()
	opts.Content = pr
	if _, err := r.api.CopyToContainer(ctx, ctr, opts); err != nil {
		pr.CloseWithError(err)
		return r.fail(err)
	}
	return nil
}

// tarTree writes src as a tar whose top entry is name.
func tarTree(w io.Writer, src, name string) error {
	tw := tar.NewWriter(w)
	if err := writeTree(tw, src, name, false, nil); err != nil {
		return err
	}
	return tw.Close()
}

// writeTree writes the tree at src to tw, its entries named top/REL (REL
// alone for an empty top), owned by root if rootOwned (as the docker CLI
// sends a build context). exclude, if set, leaves out paths (a directory
// with what it holds); sockets, devices and fifos are left out too.
func writeTree(tw *tar.Writer, src, top string, rootOwned bool, exclude func(rel string, isDir bool) bool) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		rel = filepath.ToSlash(rel)
		if rel == "." && top == "" {
			return nil
		}
		if exclude != nil && exclude(rel, d.IsDir()) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		if info.Mode()&(fs.ModeSocket|fs.ModeDevice|fs.ModeNamedPipe) != 0 {
			return nil
		}
		h, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		h.Name = path.Join(top, rel)
		if d.IsDir() {
			h.Name += "/"
		}
		h.Uname, h.Gname = "", ""
		if rootOwned {
			h.Uid, h.Gid = 0, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.CopyN(tw, f, h.Size); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		return nil
	})
}
