package main

import (
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	units "github.com/docker/go-units"
	"github.com/spf13/cobra"

	"github.com/vmctl/vmctl/engine/containers"
)

func newPsCommand(g *globalOptions) *cobra.Command {
	var all, quiet bool
	cmd := &cobra.Command{
		Use:   "ps [-a] [-q]",
		Short: "List containers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.host != "" {
				return remotePs(cmd.Context(), g, all, quiet)
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			list, err := e.Containers.List()
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 3, ' ', 0)
			if !quiet {
				fmt.Fprintln(w, "CONTAINER ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS\tNAMES")
			}
			for _, c := range list {
				if !all && c.State.Status != containers.StatusRunning {
					continue
				}
				if quiet {
					fmt.Fprintln(w, c.ShortID())
					continue
				}
				command := strings.Join(c.Config.Args, " ")
				if len(command) > 20 {
					command = command[:19] + "…"
				}
				fmt.Fprintf(w, "%s\t%s\t%q\t%s\t%s\t%s\n", c.ShortID(), c.Config.Image, command, ago(c.Created), statusText(c), c.Name)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show all containers (default shows just running)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only display container IDs")
	return cmd
}

// statusText is docker ps's STATUS column.
func statusText(c *containers.Container) string {
	switch c.State.Status {
	case containers.StatusRunning:
		return "Up " + units.HumanDuration(time.Since(c.State.StartedAt))
	case containers.StatusExited:
		return fmt.Sprintf("Exited (%d) %s ago", c.State.ExitCode, units.HumanDuration(time.Since(c.State.FinishedAt)))
	}
	return "Created"
}

func newRmCommand(g *globalOptions) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] CONTAINER [CONTAINER...]",
		Short: "Remove containers and their writable layers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.host != "" {
				return remoteRm(cmd.Context(), g, args, force)
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			var failed error
			for _, ref := range args {
				if err := e.Containers.Remove(cmd.Context(), ref, force); err != nil {
					fmt.Fprintln(os.Stderr, "vmctl: "+oneLine(err))
					failed = &statusError{code: 1}
					continue
				}
				fmt.Println(ref)
			}
			return failed
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container before removing it")
	return cmd
}
