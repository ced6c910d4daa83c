// Command vmctl runs containers, each in its own lightweight VM.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/vmctl/vmctl/engine"
	"github.com/vmctl/vmctl/engine/server"
)

// statusError carries the exit status a command must end with, like the
// docker CLI's: 125 when vmctl itself failed, 126/127 when the container's
// command could not be run, otherwise the container's own status.
type statusError struct {
	code int
	err  error // nil: exit silently with code
}

func (e *statusError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

type globalOptions struct {
	dataRoot string
	execRoot string
	kernel   string
	// snapshots: the in-process engine starts VMs from saved ones.
	snapshots bool
	initrd    string
	host      string // a vmctld to drive (-H, VMCTL_HOST); empty: see connect
	// flags are the persistent flags, to tell the engine flags given
	// from their defaults.
	flags *pflag.FlagSet
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func newRootCommand() (*cobra.Command, *globalOptions) {
	g := &globalOptions{}
	root := &cobra.Command{
		Use:   "vmctl",
		Short: "Run containers, each in its own lightweight virtual machine",
		Long: `Run containers, each in its own lightweight virtual machine.

vmctl is a client of the Docker Engine API. It drives the vmctld that -H
(unix:///path/to/socket or tcp://host:port) or VMCTL_HOST names, so one
vmctl can drive several daemons; else the vmctld on the default socket,
` + server.DefaultHost + ` (VMCTL_DEFAULT_HOST moves it), as docker finds
its daemon. With no daemon there, or with an engine flag (--data-root,
--exec-root, --kernel, --initrd, or their environment variables), the
engine runs in this process on that state: containers then live only as
long as the command, so run -d, create, start, stop, restart, kill, exec,
attach, wait and events need a daemon. vmctl info says which engine it used.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       engine.Version,
	}
	root.SetVersionTemplate("vmctl version {{.Version}}\n")
	root.CompletionOptions.DisableDefaultCmd = true
	f := root.PersistentFlags()
	f.StringVar(&g.dataRoot, "data-root", envOr("VMCTL_DATA_ROOT", "/var/lib/vmctl"), "root of persistent state: images, disks, containers (env VMCTL_DATA_ROOT)")
	f.StringVar(&g.execRoot, "exec-root", envOr("VMCTL_EXEC_ROOT", "/run/vmctl"), "root of runtime state: VM sockets (env VMCTL_EXEC_ROOT)")
	f.StringVar(&g.kernel, "kernel", os.Getenv("VMCTL_KERNEL"), "guest kernel (bzImage); default: guest/vmlinuz next to the vmctl binary, or ../lib/vmctl/guest/ when installed (env VMCTL_KERNEL)")
	f.StringVar(&g.initrd, "initrd", os.Getenv("VMCTL_INITRD"), "guest image (initramfs with the agent); default: guest/initramfs.img next to the vmctl binary, or ../lib/vmctl/guest/ when installed (env VMCTL_INITRD)")
	f.BoolVar(&g.snapshots, "snapshots", os.Getenv("VMCTL_SNAPSHOTS") != "false", "the engine in this process starts VMs from a guest saved once per VM shape (in DATA_ROOT/snapshots) instead of booting each (env VMCTL_SNAPSHOTS=false turns it off); a daemon has its own --snapshots")
	f.StringVarP(&g.host, "host", "H", os.Getenv("VMCTL_HOST"), "vmctld to drive: unix:///path or tcp://host:port (env VMCTL_HOST); default: the one on "+server.DefaultHost+" if it answers, else the engine in this process")
	g.flags = f
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &statusError{code: 125, err: fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	root.AddCommand(
		newRunCommand(g),
		newCreateCommand(g),
		newExecCommand(g),
		newAttachCommand(g),
		newLoadCommand(g),
		newBuildCommand(g),
		newHistoryCommand(g),
		newCommitCommand(g),
		newDiffCommand(g),
		newExportCommand(g),
		newCpCommand(g),
		newImageCommand(g),
		newBuilderCommand(g),
		newSaveCommand(g),
		newImagesCommand(g),
		newRmiCommand(g),
		newPullCommand(g),
		newPushCommand(g),
		newTagCommand(g),
		newLoginCommand(g),
		newLogoutCommand(),
		newPsCommand(g),
		newRmCommand(g),
		newLogsCommand(g),
		newStartCommand(g),
		newStopCommand(g),
		newRestartCommand(g),
		newWaitCommand(g),
		newKillCommand(g),
		newRenameCommand(g),
		newImportCommand(g),
		newUpdateCommand(g),
		newTopCommand(g),
		newStatsCommand(g),
		newPauseCommand(g, false),
		newPauseCommand(g, true),
		newContainerCommand(g),
		newInspectCommand(g),
		newEventsCommand(g),
		newInfoCommand(g),
		newCheckCommand(g),
		newVersionCommand(g),
		newVolumeCommand(g),
		newNetworkCommand(g),
		newPortCommand(g),
	)
	return root, g
}

func main() {
	root, _ := newRootCommand()
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return
	}
	code := 125
	var se *statusError
	if errors.As(err, &se) {
		code = se.code
		if se.err == nil {
			os.Exit(code)
		}
	}
	fmt.Fprintln(os.Stderr, "vmctl: "+oneLine(err))
	os.Exit(code)
}

// oneLine keeps an error on one line, as users read it.
func oneLine(err error) string {
	msg := strings.TrimSpace(err.Error())
	msg = strings.ReplaceAll(msg, "\r", "")
	return strings.ReplaceAll(msg, "\n", "; ")
}
