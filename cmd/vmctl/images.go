package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containerd/errdefs"
	units "github.com/docker/go-units"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/vmctl/vmctl/engine/images"
)

func newLoadCommand(g *globalOptions) *cobra.Command {
	var input string
	cmd := &cobra.Command{
		Use:   "load [-i FILE]",
		Short: "Load images from a docker save tarball or an OCI image-layout tarball",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r io.Reader = os.Stdin
			if input != "" && input != "-" {
				f, err := os.Open(input)
				if err != nil {
					return fmt.Errorf("open %s: %w", input, unwrapPathError(err))
				}
				defer f.Close()
				r = f
			} else if term.IsTerminal(int(os.Stdin.Fd())) {
				return errors.New("load reads an archive from stdin, which is a terminal: give -i FILE or redirect stdin")
			}
			if g.host != "" {
				return remoteLoad(cmd.Context(), g, r)
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			loaded, err := e.Images.LoadArchive(cmd.Context(), r)
			if err != nil {
				return err
			}
			for _, img := range loaded {
				if len(img.Tags) == 0 {
					fmt.Printf("Loaded image ID: %s\n", img.ID)
				}
				for _, t := range img.Tags {
					fmt.Printf("Loaded image: %s\n", t)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&input, "input", "i", "", "read from a tar archive file instead of stdin")
	return cmd
}

// remoteLoad sends the archive to the daemon and prints what it loaded,
// as the daemon words it ("Loaded image: busybox:latest").
func remoteLoad(ctx context.Context, g *globalOptions, in io.Reader) error {
	r, err := g.remote()
	if err != nil {
		return err
	}
	defer r.Close()
	resp, err := r.api.ImageLoad(ctx, in)
	if err != nil {
		return r.fail(err)
	}
	defer resp.Close()
	dec := json.NewDecoder(resp)
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return r.fail(fmt.Errorf("reading the daemon's reply: %w", err))
		}
		if m.Error != nil {
			return &daemonError{msg: oneLine(errors.New(m.Error.Message)), err: errdefs.ErrUnknown}
		}
		if m.Stream != "" {
			fmt.Print(m.Stream)
		}
	}
}

func newSaveCommand(g *globalOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "save [-o FILE] IMAGE [IMAGE...]",
		Short: "Write images to a docker save tarball (on stdout unless -o is given)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output == "" || output == "-" {
				if term.IsTerminal(int(os.Stdout.Fd())) {
					return errors.New("refusing to write an image archive to a terminal: give -o FILE or redirect stdout")
				}
				return saveImages(cmd.Context(), g, args, os.Stdout)
			}
			return saveToFile(output, func(w io.Writer) error { return saveImages(cmd.Context(), g, args, w) })
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to this file instead of stdout")
	return cmd
}

// saveImages writes a docker save archive of refs to w, from the daemon
// with -H, else from the local store.
func saveImages(ctx context.Context, g *globalOptions, refs []string, w io.Writer) error {
	if g.host != "" {
		r, err := g.remote()
		if err != nil {
			return err
		}
		defer r.Close()
		rc, err := r.api.ImageSave(ctx, refs)
		if err != nil {
			return r.fail(err)
		}
		defer rc.Close()
		// The daemon cuts the connection if it fails half way, so a
		// short archive shows up here as an error, never as success.
		if _, err := io.Copy(w, rc); err != nil {
			return r.fail(fmt.Errorf("receiving the archive: %w", err))
		}
		return nil
	}
	e, err := g.open()
	if err != nil {
		return err
	}
	named, err := e.Images.ForSave(ctx, refs)
	if err != nil {
		return err
	}
	return images.WriteArchive(w, images.FormatDocker, named)
}

// saveToFile runs write on a temp file next to path and renames it to
// path only if write succeeded, so a failed save leaves no partial
// archive (and an existing file at path untouched).
func saveToFile(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-")
	if err != nil {
		return fmt.Errorf("create %s: %w", path, unwrapPathError(err))
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, unwrapPathError(err))
	}
	return nil
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func newImagesCommand(g *globalOptions) *cobra.Command {
	var quiet, noTrunc bool
	var format string
	cmd := &cobra.Command{
		Use:   "images",
		Short: "List local images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "" || noTrunc {
				return formatImages(cmd.Context(), g, format, quiet, noTrunc)
			}
			if g.host != "" {
				return remoteImages(cmd.Context(), g, quiet)
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			list, err := e.ListImages(cmd.Context())
			if err != nil {
				return err
			}
			if quiet {
				for _, img := range list {
					fmt.Println(shortImageID(img.ID))
				}
				return nil
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
			fmt.Fprintln(w, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE")
			for _, img := range list {
				tags := img.RepoTags
				if len(tags) == 0 {
					tags = []string{"<none>:<none>"}
				}
				for _, rt := range tags {
					i := strings.LastIndex(rt, ":")
					repo, tag := rt, "<none>"
					if i > 0 && !strings.Contains(rt[i:], "/") {
						repo, tag = rt[:i], rt[i+1:]
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", repo, tag, shortImageID(img.ID), ago(img.Created), units.HumanSizeWithPrecision(float64(img.Size), 3))
				}
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only show image IDs")
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "do not truncate image IDs")
	cmd.Flags().StringVar(&format, "format", "", "format output with a Go template (.ID .Repository .Tag .Digest .CreatedSince .CreatedAt .Size), \"table TEMPLATE\" or json")
	return cmd
}

func newRmiCommand(g *globalOptions) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rmi [-f] IMAGE [IMAGE...]",
		Short: "Remove images",
		Long: `Remove images, as docker rmi does: a reference by tag untags it and
deletes the image with its last tag; one by ID deletes it with all its tags.
An image a container uses, running or not, is not deleted: refused, or with
-f only untagged.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Without -H the engine is served in this process (see api):
			// one implementation, the same output.
			r, done, err := g.api()
			if err != nil {
				return err
			}
			defer done()
			return rmi(cmd.Context(), r, args, force)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "untag an image even if a container uses it")
	return cmd
}

func shortImageID(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		id = id[:12]
	}
	return id
}

func ago(t time.Time) string {
	if t.IsZero() || t.Unix() <= 0 {
		return "N/A"
	}
	return units.HumanDuration(time.Since(t)) + " ago"
}
