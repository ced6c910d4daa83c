package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"
	"github.com/spf13/cobra"
)

func newLoadCommand(g *globalOptions) *cobra.Command {
	var input string
	cmd := &cobra.Command{
		Use:   "load [-i FILE]",
		Short: "Load images from a docker save tarball or an OCI image-layout tarball",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.host != "" {
				return remoteUnsupported("load")
			}
			var r io.Reader = os.Stdin
			if input != "" && input != "-" {
				f, err := os.Open(input)
				if err != nil {
					return fmt.Errorf("open %s: %w", input, unwrapPathError(err))
				}
				defer f.Close()
				r = f
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			loaded, err := e.LoadImages(cmd.Context(), r)
			if err != nil {
				return err
			}
			for _, img := range loaded {
				if len(img.RepoTags) == 0 {
					fmt.Printf("Loaded image ID: %s\n", img.ID)
				}
				for _, t := range img.RepoTags {
					fmt.Printf("Loaded image: %s\n", t)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&input, "input", "i", "", "read from a tar archive file instead of stdin")
	return cmd
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func newImagesCommand(g *globalOptions) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "images",
		Short: "List local images",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
	return cmd
}

func newRmiCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "rmi IMAGE [IMAGE...]",
		Short: "Remove images",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.host != "" {
				return remoteRmi(cmd.Context(), g, args)
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			var failed error
			for _, ref := range args {
				if err := e.RemoveImage(cmd.Context(), ref); err != nil {
					fmt.Fprintln(os.Stderr, "vmctl: "+oneLine(err))
					failed = &statusError{code: 1}
					continue
				}
				fmt.Printf("Untagged: %s\n", ref)
			}
			return failed
		},
	}
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
