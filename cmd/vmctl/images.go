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
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newLoadCommand(g *globalOptions) *cobra.Command {
	var input string
	cmd := &cobra.Command{
		Use:   "load [-i FILE]",
		Short: "Load images from a docker save tarball or an OCI image-layout tarball",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			in, done, err := openArchive(input, "load", "-i FILE")
			if err != nil {
				return err
			}
			defer done()
			return g.withEngine("load", false, func(r *remote) error { return r.load(cmd.Context(), in) })
		},
	}
	cmd.Flags().StringVarP(&input, "input", "i", "", "read from a tar archive file instead of stdin")
	return cmd
}

func newImportCommand(g *globalOptions) *cobra.Command {
	var changes []string
	var message string
	cmd := &cobra.Command{
		Use:   "import [-c CHANGE] [-m MESSAGE] FILE|- [REPOSITORY[:TAG]]",
		Short: "Make an image of one layer from a root file system tar (plain, gzip, bzip2 or xz)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, done, err := openArchive(args[0], "import", "FILE")
			if err != nil {
				return err
			}
			defer done()
			ref := ""
			if len(args) == 2 {
				ref = args[1]
			}
			return g.withEngine("import", false, func(r *remote) error {
				rc, err := r.api.ImageImport(cmd.Context(), client.ImageImportSource{Source: in, SourceName: "-"}, ref,
					client.ImageImportOptions{Message: message, Changes: changes})
				if err != nil {
					return r.fail(err)
				}
				defer rc.Close()
				var m jsonstream.Message
				if err := json.NewDecoder(rc).Decode(&m); err != nil {
					return r.fail(fmt.Errorf("reading the engine's reply: %w", err))
				}
				if m.Error != nil {
					return &daemonError{msg: oneLine(errors.New(m.Error.Message)), err: errdefs.ErrUnknown}
				}
				fmt.Println(m.Status)
				return nil
			})
		},
	}
	cmd.Flags().StringArrayVarP(&changes, "change", "c", nil, "apply a Dockerfile instruction to the image (CMD, ENTRYPOINT, ENV, ...)")
	cmd.Flags().StringVarP(&message, "message", "m", "", "the history's comment")
	return cmd
}

// openArchive opens the archive a command reads: the file name, or stdin
// for "" or "-", which must not be a terminal (give says what to give
// instead). done closes what was opened.
func openArchive(name, command, give string) (in io.Reader, done func(), err error) {
	if name != "" && name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, nil, fmt.Errorf("open %s: %w", name, unwrapPathError(err))
		}
		return f, func() { f.Close() }, nil
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		return nil, nil, fmt.Errorf("%s reads an archive from stdin, which is a terminal: give %s or redirect stdin", command, give)
	}
	return os.Stdin, func() {}, nil
}

// load sends the archive to the engine and prints what it loaded, as the
// engine words it ("Loaded image: busybox:latest").
func (r *remote) load(ctx context.Context, in io.Reader) error {
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
			return r.fail(fmt.Errorf("reading the engine's reply: %w", err))
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
			return writeOutput(output, "an image archive", func(w io.Writer) error {
				return g.withEngine("save", false, func(r *remote) error { return r.save(cmd.Context(), args, w) })
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to this file instead of stdout")
	return cmd
}

// save writes a docker save archive of refs to w.
func (r *remote) save(ctx context.Context, refs []string, w io.Writer) error {
	rc, err := r.api.ImageSave(ctx, refs)
	if err != nil {
		return r.fail(err)
	}
	defer rc.Close()
	// The engine cuts the connection if it fails half way, so a short
	// archive shows up here as an error, never as success.
	if _, err := io.Copy(w, rc); err != nil {
		return r.fail(fmt.Errorf("receiving the archive: %w", err))
	}
	return nil
}

// writeOutput runs write on stdout for an output of "" or "-" (refusing a
// terminal: what is a tar), or on the file output (see saveToFile).
func writeOutput(output, what string, write func(io.Writer) error) error {
	if output == "" || output == "-" {
		if term.IsTerminal(int(os.Stdout.Fd())) {
			return fmt.Errorf("refusing to write %s to a terminal: give -o FILE or redirect stdout", what)
		}
		return write(os.Stdout)
	}
	return saveToFile(output, write)
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
	var quiet, noTrunc, all bool
	var format string
	cmd := &cobra.Command{
		Use:   "images",
		Short: "List local images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withEngine("images", false, func(r *remote) error {
				list, err := r.api.ImageList(cmd.Context(), client.ImageListOptions{All: all})
				if err != nil {
					return r.fail(err)
				}
				if format != "" || noTrunc {
					return writeImages(os.Stdout, list.Items, format, quiet, noTrunc)
				}
				if quiet {
					for _, img := range list.Items {
						fmt.Println(shortImageID(img.ID))
					}
					return nil
				}
				w := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
				fmt.Fprintln(w, "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE")
				for _, img := range list.Items {
					tags := img.RepoTags
					if len(tags) == 0 {
						tags = []string{"<none>:<none>"}
					}
					for _, rt := range tags {
						repo, tag := splitRepoTag(rt)
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", repo, tag, shortImageID(img.ID),
							ago(time.Unix(img.Created, 0)), units.HumanSizeWithPrecision(float64(img.Size), 3))
					}
				}
				return w.Flush()
			})
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only show image IDs")
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show all images, the intermediate images of builds too")
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "do not truncate image IDs")
	cmd.Flags().StringVar(&format, "format", "", "format output with a Go template (.ID .Repository .Tag .Digest .CreatedSince .CreatedAt .Size), \"table TEMPLATE\" or json")
	return cmd
}

// splitRepoTag splits "host:5000/name:tag" at the tag's colon, not the
// port's.
func splitRepoTag(rt string) (string, string) {
	i := strings.LastIndex(rt, ":")
	if i > 0 && !strings.Contains(rt[i:], "/") {
		return rt[:i], rt[i+1:]
	}
	return rt, "<none>"
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
			return g.withEngine("rmi", false, func(r *remote) error { return r.rmi(cmd.Context(), args, force) })
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "untag an image even if a container uses it")
	return cmd
}

// rmi removes images and prints what went, as docker rmi.
func (r *remote) rmi(ctx context.Context, refs []string, force bool) error {
	return forEach(refs, func(ref string) error {
		res, err := r.api.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: force})
		if err != nil {
			return r.fail(err)
		}
		for _, d := range res.Items {
			if d.Untagged != "" {
				fmt.Printf("Untagged: %s\n", d.Untagged)
			}
			if d.Deleted != "" {
				fmt.Printf("Deleted: %s\n", d.Deleted)
			}
		}
		if len(res.Items) == 0 {
			fmt.Printf("Untagged: %s\n", ref)
		}
		return nil
	})
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
