package main

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"encoding/hex"
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
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

type buildOptions struct {
	tags, buildArgs, labels []string
	file, target, iidfile   string
	network                 string
	noCache, pull, quiet    bool
}

func newBuildCommand(g *globalOptions) *cobra.Command {
	var o buildOptions
	cmd := &cobra.Command{
		Use:   "build [OPTIONS] PATH | -",
		Short: "Build an image from a Dockerfile (a directory, or a tar on stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := o.apiOptions()
			if err != nil {
				return &statusError{code: 125, err: err}
			}
			var body io.Reader
			if args[0] == "-" {
				if term.IsTerminal(int(os.Stdin.Fd())) {
					return errors.New("build - reads the context as a tar from stdin, which is a terminal: redirect stdin")
				}
				body = os.Stdin
			} else {
				rc, dockerfile, err := contextTar(args[0], o.file)
				if err != nil {
					return err
				}
				defer rc.Close()
				body, opts.Dockerfile = rc, dockerfile
			}
			// docker build exits 1 for a build that fails, as for a refusal.
			return daemonFailure(g.withEngine("build", false, func(r *remote) error { return r.build(cmd.Context(), body, opts, o) }))
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&o.tags, "tag", "t", nil, "name the image: NAME[:TAG] (repeatable)")
	f.StringVarP(&o.file, "file", "f", "", "the Dockerfile (default PATH/Dockerfile)")
	f.StringArrayVar(&o.buildArgs, "build-arg", nil, "set a build-time variable: KEY=VALUE, or KEY to take it from the environment")
	f.StringVar(&o.target, "target", "", "build up to this stage")
	f.BoolVar(&o.noCache, "no-cache", false, "run every step again, using no cache")
	f.BoolVar(&o.pull, "pull", false, "pull the base images even when they are stored")
	f.StringArrayVar(&o.labels, "label", nil, "set a label on the image: KEY=VALUE")
	f.BoolVarP(&o.quiet, "quiet", "q", false, "print only the image ID")
	f.StringVar(&o.iidfile, "iidfile", "", "write the image ID to this file")
	f.StringVar(&o.network, "network", "default", "the network of RUN steps: default or none")
	return cmd
}

func (o buildOptions) apiOptions() (client.ImageBuildOptions, error) {
	opts := client.ImageBuildOptions{Tags: o.tags, NoCache: o.noCache, PullParent: o.pull, SuppressOutput: o.quiet,
		Target: o.target, NetworkMode: o.network, Remove: true, BuildArgs: map[string]*string{}, Labels: map[string]string{}}
	switch o.network {
	case "default", "none":
	default:
		return opts, fmt.Errorf("invalid --network %q: builds take default or none", o.network)
	}
	for _, kv := range o.buildArgs {
		k, v, ok := strings.Cut(kv, "=")
		if k == "" {
			return opts, fmt.Errorf("invalid --build-arg %q: want KEY=VALUE", kv)
		}
		if !ok {
			if env, set := os.LookupEnv(k); set {
				v, ok = env, true
			}
		}
		if ok {
			opts.BuildArgs[k] = &v
		} else {
			opts.BuildArgs[k] = nil
		}
	}
	for _, kv := range o.labels {
		k, v, _ := strings.Cut(kv, "=")
		if k == "" {
			return opts, fmt.Errorf("invalid --label %q: want KEY=VALUE", kv)
		}
		opts.Labels[k] = v
	}
	return opts, nil
}

// build sends the context and shows the engine's lines; the image ID goes
// to stdout alone with -q, and to --iidfile.
func (r *remote) build(ctx context.Context, body io.Reader, opts client.ImageBuildOptions, o buildOptions) error {
	resp, err := r.api.ImageBuild(ctx, body, opts)
	if err != nil {
		return r.fail(err)
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	id := ""
	for {
		var m jsonstream.Message
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return r.fail(fmt.Errorf("reading the engine's reply: %w", err))
		}
		if m.Error != nil {
			return &daemonError{msg: oneLine(errors.New(m.Error.Message)), err: errdefs.ErrUnknown}
		}
		if m.Aux != nil {
			var aux struct{ ID string }
			if json.Unmarshal(*m.Aux, &aux) == nil && aux.ID != "" {
				id = aux.ID
			}
			continue
		}
		if m.Stream != "" && !o.quiet {
			fmt.Print(m.Stream)
		}
	}
	if id == "" {
		return errors.New("the engine's reply named no image")
	}
	if o.quiet {
		fmt.Println(id)
	}
	if o.iidfile != "" {
		if err := os.WriteFile(o.iidfile, []byte(id), 0o644); err != nil {
			return fmt.Errorf("write --iidfile: %w", unwrapPathError(err))
		}
	}
	return nil
}

// contextTar streams the directory dir as a tar, leaving out what its
// .dockerignore excludes (but never the Dockerfile or .dockerignore), with
// every entry owned by root, as the docker CLI sends a context. file is -f:
// a Dockerfile outside dir is added under a name of its own. It returns
// the Dockerfile's name in the tar.
func contextTar(dir, file string) (io.ReadCloser, string, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, "", fmt.Errorf("unable to prepare context: %w", unwrapPathError(err))
	}
	if !info.IsDir() {
		return nil, "", fmt.Errorf("unable to prepare context: context must be a directory: %s", dir)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, "", err
	}
	dockerfile := "Dockerfile"
	var extra []byte
	if file != "" && file != "-" {
		f, err := filepath.Abs(file)
		if err != nil {
			return nil, "", err
		}
		if rel, err := filepath.Rel(abs, f); err == nil && !strings.HasPrefix(rel, "..") {
			dockerfile = filepath.ToSlash(rel)
		} else {
			if extra, err = os.ReadFile(file); err != nil {
				return nil, "", fmt.Errorf("unable to prepare context: %w", unwrapPathError(err))
			}
			var b [8]byte
			rand.Read(b[:])
			dockerfile = ".dockerfile." + hex.EncodeToString(b[:])
		}
	} else if file == "-" {
		if extra, err = io.ReadAll(os.Stdin); err != nil {
			return nil, "", err
		}
		dockerfile = ".dockerfile.stdin"
	}
	var pm *patternmatcher.PatternMatcher
	if f, err := os.Open(filepath.Join(abs, ".dockerignore")); err == nil {
		patterns, err := ignorefile.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, "", fmt.Errorf("reading .dockerignore: %w", err)
		}
		if pm, err = patternmatcher.New(patterns); err != nil {
			return nil, "", fmt.Errorf(".dockerignore: %w", err)
		}
	}
	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		err := writeTree(tw, abs, "", true, func(rel string, isDir bool) bool {
			if pm == nil || rel == dockerfile || rel == ".dockerignore" {
				return false
			}
			if isDir && pm.Exclusions() {
				return false // a "!" pattern may take back what is below it
			}
			m, _ := pm.MatchesOrParentMatches(filepath.FromSlash(rel))
			return m
		})
		if err == nil && extra != nil {
			if err = tw.WriteHeader(&tar.Header{Name: dockerfile, Mode: 0o644, Size: int64(len(extra)), Typeflag: tar.TypeReg}); err == nil {
				_, err = tw.Write(extra)
			}
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr, dockerfile, nil
}

func newHistoryCommand(g *globalOptions) *cobra.Command {
	var noTrunc, quiet bool
	cmd := &cobra.Command{
		Use:   "history [--no-trunc] [-q] IMAGE",
		Short: "Show the steps that made an image",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return daemonFailure(g.withEngine("history", false, func(r *remote) error {
				res, err := r.api.ImageHistory(cmd.Context(), args[0])
				if err != nil {
					return r.fail(err)
				}
				if quiet {
					for _, h := range res.Items {
						fmt.Println(historyID(h.ID, noTrunc))
					}
					return nil
				}
				w := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
				fmt.Fprintln(w, "IMAGE\tCREATED\tCREATED BY\tSIZE\tCOMMENT")
				for _, h := range res.Items {
					by := strings.ReplaceAll(h.CreatedBy, "\t", " ")
					if !noTrunc && len(by) > 45 {
						by = by[:44] + "…"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", historyID(h.ID, noTrunc), ago(time.Unix(h.Created, 0)), by,
						units.HumanSizeWithPrecision(float64(h.Size), 3), h.Comment)
				}
				return w.Flush()
			}))
		},
	}
	cmd.Flags().BoolVar(&noTrunc, "no-trunc", false, "do not truncate IDs and commands")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only show image IDs")
	return cmd
}

func historyID(id string, noTrunc bool) string {
	if noTrunc || id == "<missing>" {
		return id
	}
	return shortImageID(id)
}

func newCommitCommand(g *globalOptions) *cobra.Command {
	var author, message string
	var changes []string
	var pause bool
	cmd := &cobra.Command{
		Use:   "commit [OPTIONS] CONTAINER [REPOSITORY[:TAG]]",
		Short: "Make an image of a running container's changes",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := ""
			if len(args) == 2 {
				ref = args[1]
			}
			return daemonFailure(g.withEngine("commit", false, func(r *remote) error {
				res, err := r.api.ContainerCommit(cmd.Context(), args[0], client.ContainerCommitOptions{
					Reference: ref, Comment: message, Author: author, Changes: changes, NoPause: !pause})
				if err != nil {
					return r.fail(err)
				}
				fmt.Println(res.ID)
				return nil
			}))
		},
	}
	f := cmd.Flags()
	f.StringVarP(&author, "author", "a", "", "the image's author")
	f.StringVarP(&message, "message", "m", "", "the commit message")
	f.StringArrayVarP(&changes, "change", "c", nil, "apply a Dockerfile instruction to the image (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, USER, VOLUME, WORKDIR, ...)")
	f.BoolVarP(&pause, "pause", "p", true, "accepted for docker's sake: the changes are read while the container runs")
	return cmd
}

func newDiffCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "diff CONTAINER",
		Short: "List what a running container changed in its image's file system (A added, C changed, D deleted)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return daemonFailure(g.withEngine("diff", false, func(r *remote) error {
				res, err := r.api.ContainerDiff(cmd.Context(), args[0], client.ContainerDiffOptions{})
				if err != nil {
					return r.fail(err)
				}
				for _, c := range res.Changes {
					kind := map[uint8]string{0: "C", 1: "A", 2: "D"}[uint8(c.Kind)]
					fmt.Printf("%s %s\n", kind, c.Path)
				}
				return nil
			}))
		},
	}
}

func newExportCommand(g *globalOptions) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "export [-o FILE] CONTAINER",
		Short: "Write a running container's file system as a tar (on stdout unless -o is given)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			export := func(w io.Writer) error {
				return daemonFailure(g.withEngine("export", false, func(r *remote) error {
					rc, err := r.api.ContainerExport(cmd.Context(), args[0], client.ContainerExportOptions{})
					if err != nil {
						return r.fail(err)
					}
					defer rc.Close()
					if _, err := io.Copy(w, rc); err != nil {
						return r.fail(fmt.Errorf("receiving the tar: %w", err))
					}
					return nil
				}))
			}
			return writeOutput(output, "a tar", export)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write to this file instead of stdout")
	return cmd
}

func newImageCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage images (prune; the others are top-level commands)"}
	var all, force bool
	prune := &cobra.Command{
		Use:   "prune [-a] [-f]",
		Short: "Remove untagged images no container uses (a build's intermediate images among them); -a: every unused image",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			what := "WARNING! This will remove all dangling images."
			if all {
				what = "WARNING! This will remove all images without at least one container associated to them."
			}
			if !force && !confirm(what+"\nAre you sure you want to continue?") {
				return nil
			}
			return daemonFailure(g.withEngine("image prune", false, func(r *remote) error {
				f := client.Filters{}
				if all {
					f = f.Add("dangling", "false")
				}
				res, err := r.api.ImagePrune(cmd.Context(), client.ImagePruneOptions{Filters: f})
				if err != nil {
					return r.fail(err)
				}
				if len(res.Report.ImagesDeleted) > 0 {
					fmt.Println("Deleted Images:")
					for _, d := range res.Report.ImagesDeleted {
						fmt.Println("deleted: " + d.Deleted)
					}
					fmt.Println()
				}
				fmt.Printf("Total reclaimed space: %s\n", units.HumanSize(float64(res.Report.SpaceReclaimed)))
				return nil
			}))
		},
	}
	prune.Flags().BoolVarP(&all, "all", "a", false, "remove every image no container uses, not only untagged ones")
	prune.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	cmd.AddCommand(prune)
	return cmd
}

func newBuilderCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "builder", Short: "Manage the build cache"}
	var force bool
	prune := &cobra.Command{
		Use:   "prune [-f]",
		Short: "Remove the build cache: the intermediate images of builds that no container uses",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force && !confirm("WARNING! This will remove all dangling build cache.\nAre you sure you want to continue?") {
				return nil
			}
			return daemonFailure(g.withEngine("builder prune", false, func(r *remote) error {
				res, err := r.api.BuildCachePrune(cmd.Context(), client.BuildCachePruneOptions{})
				if err != nil {
					return r.fail(err)
				}
				for _, id := range res.Report.CachesDeleted {
					fmt.Println("deleted: " + id)
				}
				fmt.Printf("Total reclaimed space: %s\n", units.HumanSize(float64(res.Report.SpaceReclaimed)))
				return nil
			}))
		},
	}
	prune.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	cmd.AddCommand(prune)
	return cmd
}

func newContainerCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "container", Short: "Manage containers (prune; the others are top-level commands)"}
	var force bool
	var filters []string
	prune := &cobra.Command{
		Use:   "prune [-f] [--filter until=TIME|label=KEY[=VALUE]|label!=...]",
		Short: "Remove every stopped container",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f := client.Filters{}
			for _, term := range filters {
				k, v, ok := strings.Cut(term, "=")
				if !ok {
					return fmt.Errorf("invalid --filter %q: want KEY=VALUE", term)
				}
				f = f.Add(k, v)
			}
			if !force && !confirm("WARNING! This will remove all stopped containers.\nAre you sure you want to continue?") {
				return nil
			}
			return daemonFailure(g.withEngine("container prune", false, func(r *remote) error {
				res, err := r.api.ContainerPrune(cmd.Context(), client.ContainerPruneOptions{Filters: f})
				if err != nil {
					return r.fail(err)
				}
				if len(res.Report.ContainersDeleted) > 0 {
					fmt.Println("Deleted Containers:")
					for _, id := range res.Report.ContainersDeleted {
						fmt.Println(id)
					}
					fmt.Println()
				}
				fmt.Printf("Total reclaimed space: %s\n", units.HumanSize(float64(res.Report.SpaceReclaimed)))
				return nil
			}))
		},
	}
	prune.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	prune.Flags().StringArrayVar(&filters, "filter", nil, "only containers created before until=TIME (or DURATION ago), or with (label=) or without (label!=) a label")
	cmd.AddCommand(prune)
	return cmd
}
