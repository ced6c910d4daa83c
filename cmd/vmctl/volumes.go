package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	units "github.com/docker/go-units"
	"github.com/moby/moby/api/types/volume"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
)

// volumeBackend is the API the volume commands use: the daemon named by -H,
// or the engine served in this process (see api), so both give the same
// answers and output.
func (g *globalOptions) volumeBackend() (volumeBackend, error) {
	r, err := g.connect("volume", false)
	if err != nil {
		return volumeBackend{}, err
	}
	return volumeBackend{r}, nil
}

type volumeBackend struct {
	r *remote
}

func (rv volumeBackend) create(ctx context.Context, o client.VolumeCreateOptions) (volume.Volume, error) {
	res, err := rv.r.api.VolumeCreate(ctx, o)
	return res.Volume, rv.r.fail(err)
}

func (rv volumeBackend) list(ctx context.Context) ([]volume.Volume, error) {
	res, err := rv.r.api.VolumeList(ctx, client.VolumeListOptions{})
	return res.Items, rv.r.fail(err)
}

func (rv volumeBackend) inspect(ctx context.Context, name string) (volume.Volume, error) {
	res, err := rv.r.api.VolumeInspect(ctx, name, client.VolumeInspectOptions{})
	return res.Volume, rv.r.fail(err)
}

func (rv volumeBackend) remove(ctx context.Context, name string, force bool) error {
	_, err := rv.r.api.VolumeRemove(ctx, name, client.VolumeRemoveOptions{Force: force})
	return rv.r.fail(err)
}

func (rv volumeBackend) prune(ctx context.Context, all bool) ([]string, uint64, error) {
	// Explicit, because an API 1.41 daemon prunes all unused volumes by
	// default and a newer one only anonymous ones.
	res, err := rv.r.api.VolumePrune(ctx, client.VolumePruneOptions{Filters: client.Filters{}.Add("all", strconv.FormatBool(all))})
	return res.Report.VolumesDeleted, res.Report.SpaceReclaimed, rv.r.fail(err)
}

func (rv volumeBackend) close() { rv.r.Close() }

func newVolumeCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume COMMAND",
		Short: "Manage named volumes (disks that outlive containers)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(newVolumeCreateCommand(g), newVolumeLsCommand(g), newVolumeInspectCommand(g), newVolumeRmCommand(g),
		newVolumePruneCommand(g))
	return cmd
}

// parseKeyValues parses repeated KEY=VALUE flags.
func parseKeyValues(flag string, kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, &statusError{code: 125, err: fmt.Errorf("invalid --%s %q: want KEY=VALUE", flag, kv)}
		}
		out[k] = v
	}
	return out, nil
}

func newVolumeCreateCommand(g *globalOptions) *cobra.Command {
	var driver string
	var opts, labels []string
	cmd := &cobra.Command{
		Use:   "create [--opt size=SIZE] [NAME]",
		Short: "Create a volume (an ext4 disk, 8 GiB sparse unless --opt size= says otherwise)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Without a name the engine makes one up, as dockerd does.
			o := client.VolumeCreateOptions{Driver: driver}
			if len(args) == 1 {
				o.Name = args[0]
			}
			var err error
			if o.DriverOpts, err = parseKeyValues("opt", opts); err != nil {
				return err
			}
			if o.Labels, err = parseKeyValues("label", labels); err != nil {
				return err
			}
			b, err := g.volumeBackend()
			if err != nil {
				return err
			}
			defer b.close()
			v, err := b.create(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Println(v.Name)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&driver, "driver", "d", "local", "volume driver (only local)")
	f.StringArrayVarP(&opts, "opt", "o", nil, "driver option: size=SIZE (e.g. 1g)")
	f.StringArrayVar(&labels, "label", nil, "set a label (KEY=VALUE)")
	return cmd
}

func newVolumeLsCommand(g *globalOptions) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:     "ls [-q]",
		Aliases: []string{"list"},
		Short:   "List volumes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := g.volumeBackend()
			if err != nil {
				return err
			}
			defer b.close()
			list, err := b.list(cmd.Context())
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 0, 4, ' ', 0)
			if !quiet {
				fmt.Fprintln(w, "DRIVER\tVOLUME NAME")
			}
			for _, v := range list {
				if quiet {
					fmt.Fprintln(w, v.Name)
				} else {
					fmt.Fprintf(w, "%s\t%s\n", v.Driver, v.Name)
				}
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "only display volume names")
	return cmd
}

// eachVolume runs op for every name, reporting each failure on one line
// and exiting 1 if any failed, as docker does.
func eachVolume(ctx context.Context, g *globalOptions, names []string, op func(volumeBackend, string) error) error {
	b, err := g.volumeBackend()
	if err != nil {
		return err
	}
	defer b.close()
	return forEach(names, func(name string) error { return op(b, name) })
}

func newVolumeInspectCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect VOLUME [VOLUME...]",
		Short: "Show volumes' records as JSON",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			out := []volume.Volume{}
			err := eachVolume(cmd.Context(), g, args, func(b volumeBackend, name string) error {
				v, err := b.inspect(cmd.Context(), name)
				if err == nil {
					out = append(out, v)
				}
				return err
			})
			if _, ok := err.(*statusError); err != nil && !ok {
				return err
			}
			js, jerr := json.MarshalIndent(out, "", "    ")
			if jerr != nil {
				return jerr
			}
			fmt.Println(string(js))
			return err
		},
	}
}

func newVolumeRmCommand(g *globalOptions) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [-f] VOLUME [VOLUME...]",
		Aliases: []string{"remove"},
		Short:   "Remove volumes and their data (refused while a container uses them)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachVolume(cmd.Context(), g, args, func(b volumeBackend, name string) error {
				if err := b.remove(cmd.Context(), name, force); err != nil {
					return err
				}
				fmt.Println(name)
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not fail on volumes that do not exist")
	return cmd
}

func newVolumePruneCommand(g *globalOptions) *cobra.Command {
	var all, force bool
	cmd := &cobra.Command{
		Use:   "prune [-a] [-f]",
		Short: "Remove anonymous volumes no container uses (with -a, all unused volumes)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force {
				what := "anonymous volumes"
				if all {
					what = "all volumes"
				}
				fmt.Fprintf(os.Stderr, "This removes %s that no container uses, with their data. Continue? [y/N] ", what)
				answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
				if a := strings.TrimSpace(strings.ToLower(answer)); a != "y" && a != "yes" {
					return nil
				}
			}
			b, err := g.volumeBackend()
			if err != nil {
				return err
			}
			defer b.close()
			removed, freed, err := b.prune(cmd.Context(), all)
			for _, name := range removed {
				fmt.Println(name)
			}
			if err != nil {
				return err
			}
			fmt.Printf("Total reclaimed space: %s\n", units.HumanSize(float64(freed)))
			return nil
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "remove all unused volumes, not just anonymous ones")
	cmd.Flags().BoolVarP(&force, "force", "f", false, "do not ask for confirmation")
	return cmd
}
