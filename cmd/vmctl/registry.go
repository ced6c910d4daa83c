package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/moby/moby/client"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/vmctl/vmctl/internal/registryauth"
)

func newPullCommand(g *globalOptions) *cobra.Command {
	var quiet bool
	cmd := &cobra.Command{
		Use:   "pull [-q] IMAGE",
		Short: "Download an image from a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[0]
			parsed, err := parseReference(ref)
			if err != nil {
				return err
			}
			// Ctrl-C cancels the pull cleanly: the engine removes what it
			// staged and leaves the store as it was.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return g.withEngine("pull", false, func(r *remote) error {
				out := io.Writer(os.Stdout)
				if quiet {
					out = io.Discard
				}
				// docker pull's header; run, like docker run, goes straight
				// from "Unable to find image" to the layers.
				if last := ref[strings.LastIndex(ref, "/")+1:]; !strings.ContainsAny(last, ":@") {
					fmt.Fprintln(out, "Using default tag: latest")
				}
				fmt.Fprintf(out, "%s: Pulling from %s\n", parsed.Identifier(), parsed.Context().RepositoryStr())
				if err := r.pull(ctx, ref, out); err != nil {
					return err
				}
				if quiet {
					fmt.Println(parsed.Name())
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the image name")
	return cmd
}

func newPushCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "push IMAGE",
		Short: "Upload an image to a registry",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref := args[0]
			if _, err := parseReference(ref); err != nil {
				return err
			}
			auth, err := registryAuth(ref)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// The engine's stream, as the docker CLI prints it: one line
			// per layer state, then "TAG: digest: D size: N".
			return g.withEngine("push", false, func(r *remote) error {
				resp, err := r.api.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: auth})
				if err != nil {
					return r.fail(err)
				}
				defer resp.Close()
				return r.display(resp.JSONMessages(ctx), os.Stdout)
			})
		},
	}
}

func newTagCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "tag SOURCE_IMAGE TARGET_IMAGE[:TAG]",
		Short: "Give an image another name",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withEngine("tag", false, func(r *remote) error {
				_, err := r.api.ImageTag(cmd.Context(), client.ImageTagOptions{Source: args[0], Target: args[1]})
				return r.fail(err)
			})
		},
	}
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
			r, err := g.connect("login", false)
			if err != nil {
				return err
			}
			defer r.Close()
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
