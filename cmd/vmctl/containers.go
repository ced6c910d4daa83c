package main

import (
	"fmt"
	"os"

	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
)

func newPsCommand(g *globalOptions) *cobra.Command {
	var all, quiet, noTrunc, latest bool
	var last int
	var filters []string
	var format string
	cmd := &cobra.Command{
		Use:   "ps [-a] [-q] [--filter KEY=VALUE] [--format TEMPLATE]",
		Short: "List containers",
		Long: `List containers.

--filter takes docker's keys: id, name, status, exited, label, ancestor,
before, since, volume. --format takes a Go template over docker's fields (.ID,
.Image, .Command, .CreatedAt, .RunningFor, .Status, .State, .Names, .Ports,
.Labels, .Label "key"), "table TEMPLATE" for columns with headers, or json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := parseFilters(filters)
			if err != nil {
				return err
			}
			opts := client.ContainerListOptions{All: all, Limit: last, Filters: f}
			if latest {
				opts.Limit = 1
			}
			r, err := g.connect("ps", false)
			if err != nil {
				return err
			}
			defer r.Close()
			list, err := r.api.ContainerList(cmd.Context(), opts)
			if err != nil {
				return r.fail(err)
			}
			return writeContainers(os.Stdout, list.Items, format, quiet, noTrunc)
		},
	}
	fl := cmd.Flags()
	fl.BoolVarP(&all, "all", "a", false, "show all containers (default shows just running)")
	fl.BoolVarP(&quiet, "quiet", "q", false, "only display container IDs")
	fl.BoolVar(&noTrunc, "no-trunc", false, "do not truncate IDs and commands")
	fl.StringArrayVarP(&filters, "filter", "f", nil, "filter output by KEY=VALUE (repeatable)")
	fl.StringVar(&format, "format", "", "format output with a Go template, \"table TEMPLATE\" or json")
	fl.IntVarP(&last, "last", "n", 0, "show the n last created containers (includes all states)")
	fl.BoolVarP(&latest, "latest", "l", false, "show the latest created container (includes all states)")
	return cmd
}

func newRmCommand(g *globalOptions) *cobra.Command {
	var opts client.ContainerRemoveOptions
	cmd := &cobra.Command{
		Use:   "rm [-f] [-v] CONTAINER [CONTAINER...]",
		Short: "Remove containers and their writable layers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withEngine("rm", false, func(r *remote) error {
				return forEach(args, func(ref string) error {
					if _, err := r.api.ContainerRemove(cmd.Context(), ref, opts); err != nil {
						return r.fail(err)
					}
					fmt.Println(ref)
					return nil
				})
			})
		},
	}
	cmd.Flags().BoolVarP(&opts.Force, "force", "f", false, "kill a running container before removing it")
	cmd.Flags().BoolVarP(&opts.RemoveVolumes, "volumes", "v", false, "remove the container's anonymous volumes too")
	return cmd
}
