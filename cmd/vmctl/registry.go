package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	units "github.com/docker/go-units"
	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/vmctl/vmctl/engine"
	"github.com/vmctl/vmctl/engine/images"
	"github.com/vmctl/vmctl/internal/registryauth"
)

func newPullCommand(g *globalOptions) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "pull [-q] IMAGE",
		Short: "Download an image from a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.host != "" {
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				return remotePull(ctx, g, args[0], quiet)
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			out := io.Writer(os.Stdout)
			if quiet {
				out = io.Discard
			}
			// Ctrl-C cancels the pull cleanly: the stage is removed and the
			// store is left as it was.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			img, err := pullImage(ctx, e, args[0], out)
			if err != nil {
				return err
			}
			if quiet {
				fmt.Println(img)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the image name")
	return cmd
}

// pullImage pulls ref, drawing progress on out, and returns the image's
// full name.
func pullImage(ctx context.Context, e *engine.Engine, ref string, out io.Writer) (string, error) {
	r, err := images.ParseRemoteReference(ref)
	if err != nil {
		return "", err
	}
	if last := ref[strings.LastIndex(ref, "/")+1:]; !strings.ContainsAny(last, ":@") {
		fmt.Fprintln(out, "Using default tag: latest")
	}
	fmt.Fprintf(out, "%s: Pulling from %s\n", r.Identifier(), r.Context().RepositoryStr())
	pp := newProgressPrinter(out)
	img, err := e.Images.Pull(ctx, ref, images.RemoteOptions{Progress: pp.update})
	if err != nil {
		return "", err
	}
	fmt.Fprintf(out, "Digest: %s\n", img.Digest)
	fmt.Fprintf(out, "Status: Downloaded image for %s\n", images.FamiliarName(r))
	return r.Name(), nil
}

// pullIfMissing pulls ref unless the store already has it, as `run` does
// with an image it cannot find. Progress goes to out.
func pullIfMissing(ctx context.Context, e *engine.Engine, ref string, out io.Writer) error {
	_, err := e.Images.Resolve(ctx, ref)
	if err == nil || !errdefs.IsNotFound(err) {
		return err
	}
	fmt.Fprintf(out, "Unable to find image '%s' locally\n", ref)
	_, err = pullImage(ctx, e, ref, out)
	return err
}

func newPushCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "push IMAGE",
		Short: "Upload an image to a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.host != "" {
				ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
				defer stop()
				return remotePush(ctx, g, args[0])
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			r, err := images.ParseRemoteReference(args[0])
			if err != nil {
				return err
			}
			fmt.Printf("The push refers to repository [%s]\n", r.Context().Name())
			pp := newProgressPrinter(os.Stdout)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			res, err := e.Images.Push(ctx, args[0], images.RemoteOptions{Progress: pp.update})
			if err != nil {
				return err
			}
			fmt.Printf("%s: digest: %s size: %d\n", res.Tag, res.Digest, res.Size)
			return nil
		},
	}
}

func newTagCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "tag SOURCE_IMAGE TARGET_IMAGE[:TAG]",
		Short: "Give an image another name",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.host != "" {
				r, err := g.remote()
				if err != nil {
					return err
				}
				defer r.Close()
				_, err = r.api.ImageTag(cmd.Context(), client.ImageTagOptions{Source: args[0], Target: args[1]})
				return r.fail(err)
			}
			e, err := g.open()
			if err != nil {
				return err
			}
			return e.Images.Tag(cmd.Context(), args[0], args[1])
		},
	}
}

// remotePush asks the daemon to push ref with this user's credentials
// for its registry and prints the stream as the in-process push prints its
// progress: one line per layer state, then "TAG: digest: D size: N".
func remotePush(ctx context.Context, g *globalOptions, ref string) error {
	if _, err := images.ParseRemoteReference(ref); err != nil {
		return err
	}
	auth, err := registryAuth(ref)
	if err != nil {
		return err
	}
	r, err := g.remote()
	if err != nil {
		return err
	}
	defer r.Close()
	resp, err := r.api.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: auth})
	if err != nil {
		return r.fail(err)
	}
	defer resp.Close()
	return r.display(resp.JSONMessages(ctx), os.Stdout)
}

func newLoginCommand(g *globalOptions) *cobra.Command {
	var user, password string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "login [-u USER] [-p PASSWORD | --password-stdin] [SERVER]",
		Short: "Log in to a registry (the default registry if no server is given)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			server := ""
			if len(args) == 1 {
				server = args[0]
			}
			if password != "" && passwordStdin {
				return errors.New("--password and --password-stdin are mutually exclusive")
			}
			if password != "" {
				fmt.Fprintln(os.Stderr, "WARNING! Using --password via the CLI is insecure. Use --password-stdin.")
			}
			if passwordStdin {
				if user == "" {
					return errors.New("--password-stdin needs --username")
				}
				b, err := io.ReadAll(io.LimitReader(os.Stdin, 1<<20))
				if err != nil {
					return fmt.Errorf("reading password from stdin: %w", err)
				}
				password = strings.TrimRight(string(b), "\r\n")
			}
			host, key, err := registryauth.Normalize(server)
			if err != nil {
				return err
			}
			if user, password, err = promptCredentials(user, password); err != nil {
				return err
			}
			// As docker login: the engine checks the credentials against
			// the registry (POST /auth), the client keeps them.
			r, done, err := g.api()
			if err != nil {
				return err
			}
			defer done()
			res, err := r.api.RegistryLogin(cmd.Context(), client.RegistryLoginOptions{Username: user, Password: password, ServerAddress: host})
			if err != nil {
				return r.fail(err)
			}
			if err := registryauth.Store(key, user, password); err != nil {
				return fmt.Errorf("login: %w", err)
			}
			fmt.Println(res.Auth.Status)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&user, "username", "u", "", "user name")
	f.StringVarP(&password, "password", "p", "", "password (visible to other users of this machine: prefer --password-stdin)")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin")
	return cmd
}

// promptCredentials asks on the terminal for what the flags did not give.
func promptCredentials(user, password string) (string, string, error) {
	if user != "" && password != "" {
		return user, password, nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", "", errors.New("login needs a username and a password: give -u and -p or --password-stdin")
	}
	if user == "" {
		fmt.Fprint(os.Stderr, "Username: ")
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil {
			return "", "", fmt.Errorf("reading username: %w", err)
		}
		user = strings.TrimSpace(line)
	}
	if password == "" {
		fmt.Fprint(os.Stderr, "Password: ")
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return "", "", fmt.Errorf("reading password: %w", err)
		}
		password = string(b)
	}
	return user, password, nil
}

func newLogoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout [SERVER]",
		Short: "Remove stored credentials for a registry",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			server := ""
			if len(args) == 1 {
				server = args[0]
			}
			host, key, err := registryauth.Normalize(server)
			if err != nil {
				return err
			}
			had, err := registryauth.Erase(key)
			if err != nil {
				return fmt.Errorf("logout: %w", err)
			}
			if !had {
				fmt.Printf("Not logged in to %s\n", host)
				return nil
			}
			fmt.Printf("Removing login credentials for %s\n", host)
			return nil
		},
	}
}

// progressPrinter draws a pull's or push's per-layer progress: bars
// redrawn in place on a terminal, one line per state change otherwise
// (logs, pipes, tests).
type progressPrinter struct {
	out   io.Writer
	tty   bool
	board images.ProgressBoard
	drawn int // terminal lines drawn so far
	last  map[string]images.ProgressState
}

func newProgressPrinter(out io.Writer) *progressPrinter {
	tty := false
	if f, ok := out.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progressPrinter{out: out, tty: tty, last: map[string]images.ProgressState{}}
}

func (pp *progressPrinter) update(p images.Progress) {
	if pp.board.Update(p) < 0 {
		return
	}
	if pp.tty {
		pp.redraw()
		return
	}
	if pp.last[p.ID()] == p.State || p.State == images.StateWaiting || p.State == images.StatePreparing {
		return
	}
	pp.last[p.ID()] = p.State
	fmt.Fprintf(pp.out, "%s: %s\n", p.ID(), p.State)
}

// redraw moves the cursor back over the rows drawn before and rewrites
// them all, so rows keep their order as layers finish out of order.
func (pp *progressPrinter) redraw() {
	var sb strings.Builder
	if pp.drawn > 0 {
		fmt.Fprintf(&sb, "\x1b[%dA", pp.drawn)
	}
	rows := pp.board.Rows()
	for _, r := range rows {
		sb.WriteString("\x1b[2K")
		sb.WriteString(formatRow(r))
		sb.WriteByte('\n')
	}
	pp.drawn = len(rows)
	io.WriteString(pp.out, sb.String())
}

func formatRow(r images.Progress) string {
	line := fmt.Sprintf("%s: %s", r.ID(), r.State)
	if bar := images.Bar(r, 52); bar != "" {
		line = fmt.Sprintf("%s: %-12s %s %s/%s", r.ID(), r.State, bar,
			units.HumanSizeWithPrecision(float64(r.Current), 3), units.HumanSizeWithPrecision(float64(r.Total), 3))
	}
	return line
}
