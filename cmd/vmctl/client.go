package main

// The remote side of vmctl: with -H (or VMCTL_HOST) every command talks to
// a vmctld over the Docker Engine API instead of running the engine in this
// process. This file holds the connection, the error conversion and the
// listing commands; client_run.go holds run.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"net/url"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/containerd/errdefs"
	units "github.com/docker/go-units"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/jsonstream"
	"github.com/moby/moby/api/types/registry"
	"github.com/moby/moby/client"
	"github.com/moby/moby/client/pkg/jsonmessage"

	"github.com/vmctl/vmctl/engine"
	"github.com/vmctl/vmctl/engine/images"
)

// remote is a connection to one vmctld.
type remote struct {
	host string
	api  *client.Client
}

// checkHost accepts the address forms vmctld listens on, so that a typo
// is one clear line instead of a transport error.
func checkHost(host string) error {
	u, err := url.Parse(host)
	if err != nil {
		return fmt.Errorf("invalid host %q: want unix:///path/to/socket or tcp://host:port", host)
	}
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return fmt.Errorf("invalid host %q: a unix host needs a socket path, as in unix:///run/vmctld.sock", host)
		}
	case "tcp":
		if u.Host == "" || u.Port() == "" {
			return fmt.Errorf("invalid host %q: a tcp host needs a port, as in tcp://127.0.0.1:2375", host)
		}
	default:
		return fmt.Errorf("invalid host %q: want unix:///path/to/socket or tcp://host:port", host)
	}
	return nil
}

// remote connects to the daemon named by -H or VMCTL_HOST. The API version
// is negotiated on the first request, so older daemons keep working.
func (g *globalOptions) remote() (*remote, error) {
	if err := checkHost(g.host); err != nil {
		return nil, &statusError{code: 125, err: err}
	}
	api, err := client.New(client.WithHost(g.host), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, &statusError{code: 125, err: fmt.Errorf("invalid host %q: %w", g.host, err)}
	}
	return &remote{host: g.host, api: api}, nil
}

func (r *remote) Close() { r.api.Close() }

// daemonError is an error the daemon (or the way to it) returned, shown
// as the daemon's own message. It keeps the error's class for callers that
// branch on errdefs.
type daemonError struct {
	msg string
	err error
}

func (e *daemonError) Error() string { return e.msg }
func (e *daemonError) Unwrap() error { return e.err }

// fail turns a client error into the one line users read: the daemon's
// message without the client library's prefix, or why the daemon could
// not be reached.
func (r *remote) fail(err error) error {
	if err == nil {
		return nil
	}
	if client.IsErrConnectionFailed(err) {
		return &daemonError{msg: fmt.Sprintf("cannot connect to vmctld at %s: is the daemon running?", r.host), err: err}
	}
	msg := strings.TrimPrefix(oneLine(err), "Error response from daemon: ")
	return &daemonError{msg: msg, err: err}
}

func shortContainerID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func remoteRm(ctx context.Context, g *globalOptions, refs []string, opts client.ContainerRemoveOptions) error {
	r, err := g.remote()
	if err != nil {
		return err
	}
	defer r.Close()
	return forEach(refs, func(ref string) error {
		if _, err := r.api.ContainerRemove(ctx, ref, opts); err != nil {
			return r.fail(err)
		}
		fmt.Println(ref)
		return nil
	})
}

func remoteImages(ctx context.Context, g *globalOptions, quiet bool) error {
	r, err := g.remote()
	if err != nil {
		return err
	}
	defer r.Close()
	list, err := r.api.ImageList(ctx, client.ImageListOptions{})
	if err != nil {
		return r.fail(err)
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

// rmi removes images through the API and prints what went, as docker rmi.
func rmi(ctx context.Context, r *remote, refs []string, force bool) error {
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

// pull asks the daemon to pull ref and shows its progress on out (see
// display).
func (r *remote) pull(ctx context.Context, ref string, out io.Writer) error {
	auth, err := registryAuth(ref)
	if err != nil {
		return err
	}
	resp, err := r.api.ImagePull(ctx, ref, client.ImagePullOptions{RegistryAuth: auth})
	if err != nil {
		return r.fail(err)
	}
	defer resp.Close()
	return r.display(resp.JSONMessages(ctx), out)
}

// display shows a pull's or push's progress stream as the docker CLI does:
// a bar per layer on a terminal, one line per state change otherwise. An
// error in the stream becomes the command's one-line error.
func (r *remote) display(msgs iter.Seq2[jsonstream.Message, error], out io.Writer) error {
	err := jsonmessage.DisplayMessages(msgs, out)
	if jerr := (*jsonstream.Error)(nil); errors.As(err, &jerr) {
		return &daemonError{msg: oneLine(errors.New(jerr.Message)), err: errdefs.ErrUnknown}
	}
	return r.fail(err)
}

func remotePull(ctx context.Context, g *globalOptions, ref string, quiet bool) error {
	r, err := g.remote()
	if err != nil {
		return err
	}
	defer r.Close()
	out := io.Writer(os.Stdout)
	if quiet {
		out = io.Discard
	}
	// The header the in-process pull prints; run, like docker run, goes
	// straight from "Unable to find image" to the layers.
	if parsed, err := images.ParseRemoteReference(ref); err == nil {
		if last := ref[strings.LastIndex(ref, "/")+1:]; !strings.ContainsAny(last, ":@") {
			fmt.Fprintln(out, "Using default tag: latest")
		}
		fmt.Fprintf(out, "%s: Pulling from %s\n", parsed.Identifier(), parsed.Context().RepositoryStr())
	}
	if err := r.pull(ctx, ref, out); err != nil {
		return err
	}
	if quiet {
		fmt.Println(ref)
	}
	return nil
}

func remoteInfo(ctx context.Context, g *globalOptions) error {
	r, err := g.remote()
	if err != nil {
		return err
	}
	defer r.Close()
	res, err := r.api.Info(ctx, client.InfoOptions{})
	if err != nil {
		return r.fail(err)
	}
	info := res.Info
	fmt.Printf("Daemon:         %s\n", g.host)
	fmt.Printf("Version:        %s\n", info.ServerVersion)
	for _, kv := range info.DriverStatus {
		fmt.Printf("%-15s %s\n", kv[0]+":", kv[1])
	}
	for _, w := range info.Warnings {
		fmt.Printf("Warning:        %s\n", w)
	}
	fmt.Printf("Containers:     %d (%d running, %d stopped)\n", info.Containers, info.ContainersRunning, info.ContainersStopped)
	fmt.Printf("Images:         %d\n", info.Images)
	fmt.Printf("Data root:      %s\n", info.DockerRootDir)
	fmt.Printf("Host:           %s (%s/%s, kernel %s, %d CPUs, %s)\n", info.Name, info.OSType, info.Architecture,
		info.KernelVersion, info.NCPU, units.BytesSize(float64(info.MemTotal)))
	return nil
}

func remoteVersion(ctx context.Context, g *globalOptions) error {
	r, err := g.remote()
	if err != nil {
		return err
	}
	defer r.Close()
	fmt.Printf("vmctl %s (%s, %s/%s)\n", engine.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	v, err := r.api.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		return r.fail(err)
	}
	fmt.Printf("vmctld %s at %s (API %s, client uses %s, %s/%s)\n", v.Version, g.host, v.APIVersion, r.api.ClientVersion(), v.Os, v.Arch)
	return nil
}

// registryAuth is the X-Registry-Auth value for pulling ref: the
// credentials `vmctl login` stored on this machine for ref's registry, or
// empty for anonymous access. The daemon never lends its own credentials,
// so the client sends the user's, as the docker CLI does.
func registryAuth(ref string) (string, error) {
	parsed, err := images.ParseRemoteReference(ref)
	if err != nil {
		return "", err
	}
	reg := parsed.Context().Registry
	a, err := authn.DefaultKeychain.Resolve(reg)
	if err != nil {
		return "", fmt.Errorf("read credentials for %s: %w", reg.RegistryStr(), err)
	}
	cfg, err := a.Authorization()
	if err != nil {
		return "", fmt.Errorf("read credentials for %s: %w", reg.RegistryStr(), err)
	}
	if *cfg == (authn.AuthConfig{}) {
		return "", nil
	}
	return authconfig.Encode(registry.AuthConfig{
		Username: cfg.Username, Password: cfg.Password, Auth: cfg.Auth,
		IdentityToken: cfg.IdentityToken, RegistryToken: cfg.RegistryToken,
		ServerAddress: reg.RegistryStr(),
	})
}
