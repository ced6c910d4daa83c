package main

import (
	"errors"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
)

func newEventsCommand(g *globalOptions) *cobra.Command {
	var since, until, format string
	var filters []string
	cmd := &cobra.Command{
		Use:   "events [--since TIME] [--until TIME] [--filter KEY=VALUE] [--format TEMPLATE]",
		Short: "Stream what happens to containers, images and volumes (needs vmctld)",
		Long: `Stream what happens to containers, images and volumes, as docker events does.

--since replays the daemon's recent events from TIME; --until ends the
stream at TIME, and alone replays the recent events up to it (both: a Unix
time, an RFC 3339 time, or a duration before now such as 10m). --filter takes docker's keys: container, event, image,
label, type, volume. --format takes a Go template over docker's event
(.Type, .Action, .Actor.ID, .Actor.Attributes, .Time, .TimeNano) or json.

Events need a daemon: without one, each vmctl process has its own engine
and nothing would outlive the command.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := parseFilters(filters)
			if err != nil {
				return err
			}
			tmpl, err := eventTemplate(format)
			if err != nil {
				return err
			}
			r, err := g.connect("events", true)
			if err != nil {
				return err
			}
			defer r.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res := r.api.Events(ctx, client.EventsListOptions{Since: since, Until: until, Filters: f})
			for {
				select {
				case m := <-res.Messages:
					if err := writeEvent(os.Stdout, tmpl, m); err != nil {
						return err
					}
				case err := <-res.Err:
					// The stream ends with EOF at --until, or on Ctrl-C.
					if err == nil || errors.Is(err, io.EOF) || ctx.Err() != nil {
						return nil
					}
					return r.fail(err)
				}
			}
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&since, "since", "", "show events since this time")
	fl.StringVar(&until, "until", "", "stream events until this time")
	fl.StringArrayVarP(&filters, "filter", "f", nil, "filter events by KEY=VALUE (repeatable)")
	fl.StringVar(&format, "format", "", "format each event with a Go template, or json")
	return cmd
}
