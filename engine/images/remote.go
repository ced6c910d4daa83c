package images

// Registry transfers. Pull fetches into a private stage, verifies every
// blob and commits the image in one step, exactly as Load does, so an
// interrupted pull changes nothing in the store; Push sends what the store
// holds, byte for byte, so a pushed image keeps its manifest digest.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"golang.org/x/sync/errgroup"

	"github.com/vmctl/vmctl/engine/errs"
)

// RemoteOptions configures Pull, Push and Login. The zero value uses the
// credentials `vmctl login` stored (Docker's config.json) and pulls for
// linux on this machine's architecture.
type RemoteOptions struct {
	// Keychain supplies credentials; nil means authn.DefaultKeychain, which
	// reads $DOCKER_CONFIG/config.json (default ~/.docker/config.json) and
	// its credential helpers. A daemon passes the client's credentials here.
	Keychain authn.Keychain
	// Transport carries the HTTP requests; nil means remote.DefaultTransport.
	Transport http.RoundTripper
	// Progress receives per-layer events; nil means none.
	Progress ProgressFunc
	// Platform chosen from a multi-platform index; nil means linux/GOARCH.
	Platform *v1.Platform
	// Jobs bounds parallel blob transfers; 0 means 3, as Docker does.
	Jobs int
}

func (o RemoteOptions) jobs() int {
	if o.Jobs > 0 {
		return o.Jobs
	}
	return 3
}

func (o RemoteOptions) platform() v1.Platform {
	if o.Platform != nil {
		return *o.Platform
	}
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

func (o RemoteOptions) remote(ctx context.Context) []remote.Option {
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithPlatform(o.platform()),
		remote.WithJobs(o.jobs()),
		remote.WithUserAgent("vmctl"),
	}
	if o.Transport != nil {
		opts = append(opts, remote.WithTransport(o.Transport))
	}
	return opts
}

// ParseRemoteReference normalises an image reference the way Docker does:
// no registry means the default one, a single path component there means
// library/, no tag means latest. Registries on the loopback (localhost,
// 127.0.0.1, ::1) are spoken to over plain HTTP; any other registry needs
// HTTPS, except that go-containerregistry also allows HTTP for private
// (RFC 1918) addresses and .local names.
func ParseRemoteReference(s string) (name.Reference, error) {
	if s == "" {
		return nil, errs.Class(errdefs.ErrInvalidArgument, fmt.Errorf("%w: empty image name", ErrInvalidReference))
	}
	r, err := name.ParseReference(s)
	if err == nil {
		err = checkPath(r.Context())
	}
	if err != nil {
		return nil, errs.Class(errdefs.ErrInvalidArgument, fmt.Errorf("%w: %q: %w", ErrInvalidReference, s, err))
	}
	if isLoopbackRegistry(r.Context().RegistryStr()) {
		return name.ParseReference(s, name.Insecure)
	}
	return r, nil
}

// isLoopbackRegistry says whether host[:port] names this machine.
func isLoopbackRegistry(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Pull fetches ref (the platform's image, when ref names an index), stores
// it and tags it with ref when ref names a tag. A layer already in the store
// is not fetched: before each layer's GET the store is checked for its
// digest, and a hit is linked into the stage instead (StateAlreadyExists).
// Every blob is checked against its digest and size before the store
// changes; the layers' diff IDs are not (the image is stored with
// LayersVerified false): engine/rootfs checks them when it first unpacks
// the image, so a pull costs one pass over the compressed bytes.
//
// Sharing a stored layer by its digest is safe with the check deferred: a
// blob's digest fixes its content, and the diff-ID check is made per image
// (against that image's config) at every unpack, never recorded per blob.
func (s *Store) Pull(ctx context.Context, ref string, opts RemoteOptions) (Image, error) {
	r, err := ParseRemoteReference(ref)
	if err != nil {
		return Image{}, err
	}
	puller, err := remote.NewPuller(opts.remote(ctx)...)
	if err != nil {
		return Image{}, err
	}
	desc, err := puller.Get(ctx, r)
	if err != nil {
		return Image{}, remoteError("pull", r, err)
	}
	img, err := desc.Image()
	if err != nil {
		if desc.MediaType.IsIndex() {
			p := opts.platform()
			return Image{}, errs.New(errdefs.ErrNotFound, "%s has no image for %s: %w", FamiliarName(r), p.String(), err)
		}
		return Image{}, remoteError("pull", r, err)
	}
	st, err := s.newStage(ctx)
	if err != nil {
		return Image{}, err
	}
	defer st.remove()
	mdesc, err := s.fetch(ctx, st, img, newReporter(opts.Progress), opts.jobs())
	if err != nil {
		return Image{}, remoteError("pull", r, err)
	}
	c, err := st.verifyImage(ctx, mdesc, deferDiffIDs)
	if err != nil {
		return Image{}, fmt.Errorf("pull %s: %w", FamiliarName(r), err)
	}
	if t, ok := r.(name.Tag); ok {
		c.tags = []string{t.Name()}
	}
	c.repoDigests = []string{r.Context().Digest(desc.Digest.String()).String()}
	imgs, err := s.commit(ctx, st, []candidate{c})
	if err != nil {
		return Image{}, err
	}
	if len(imgs) == 0 {
		return Image{}, fmt.Errorf("pull %s: image was removed while it was being added", FamiliarName(r))
	}
	return imgs[0], nil
}

// fetch stages img's manifest, config and layers, reporting per layer.
func (s *Store) fetch(ctx context.Context, st *stage, img v1.Image, rep *reporter, jobs int) (v1.Descriptor, error) {
	raw, err := img.RawManifest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return v1.Descriptor{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return v1.Descriptor{}, err
	}
	// The registry client reads a blob up to the size its descriptor
	// declares, and to the end of the response when that is negative
	// (unknown); the config is read into memory. So the sizes a registry
	// declares bound what it can make the daemon read, and must be checked
	// before anything is fetched.
	if m.Config.Size < 0 || m.Config.Size > maxJSONBlob {
		return v1.Descriptor{}, fmt.Errorf("config %s declares a size of %d bytes; an image config has 0 to %d", m.Config.Digest, m.Config.Size, maxJSONBlob)
	}
	for _, ld := range m.Layers {
		if ld.Size < 0 {
			return v1.Descriptor{}, fmt.Errorf("layer %s declares a negative size (%d bytes)", ld.Digest, ld.Size)
		}
	}
	mh, err := st.blobs.writeBytes(raw)
	if err != nil {
		return v1.Descriptor{}, err
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("fetching config: %w", err)
	}
	if h, err := st.blobs.writeBytes(cfg); err != nil {
		return v1.Descriptor{}, err
	} else if h != m.Config.Digest {
		return v1.Descriptor{}, fmt.Errorf("config is corrupt: digest %s, manifest says %s", h, m.Config.Digest)
	}
	if err := os.MkdirAll(filepath.Join(string(st.blobs), "sha256"), 0o755); err != nil {
		return v1.Descriptor{}, err
	}
	for _, ld := range m.Layers {
		rep.emit(Progress{Digest: ld.Digest, State: StateWaiting, Total: ld.Size})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	fetched := make([]bool, len(m.Layers))
	for i, ld := range m.Layers {
		g.Go(func() error {
			var err error
			fetched[i], err = s.fetchLayer(gctx, st, img, ld, rep)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return v1.Descriptor{}, err
	}
	for i, ld := range m.Layers {
		if fetched[i] {
			rep.emit(Progress{Digest: ld.Digest, State: StateDone, Current: ld.Size, Total: ld.Size})
		}
	}
	return v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: mh}, nil
}

// fetchLayer puts one layer in the stage: linked from the store when it is
// there (fetched is false), otherwise downloaded and checked.
func (s *Store) fetchLayer(ctx context.Context, st *stage, img v1.Image, ld v1.Descriptor, rep *reporter) (fetched bool, err error) {
	if !validHash(ld.Digest) {
		return false, fmt.Errorf("layer has unsupported digest %q", ld.Digest)
	}
	if s.blobs.has(ld.Digest) {
		// A hard link keeps the blob even if a concurrent rmi collects it
		// from the store before this pull commits.
		if err := os.Link(s.blobs.path(ld.Digest), st.blobs.path(ld.Digest)); err == nil || errors.Is(err, os.ErrExist) {
			rep.emit(Progress{Digest: ld.Digest, State: StateAlreadyExists, Total: ld.Size})
			return false, nil
		}
	}
	l, err := img.LayerByDigest(ld.Digest)
	if err != nil {
		return false, fmt.Errorf("layer %s: %w", ld.Digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return false, fmt.Errorf("fetching layer %s: %w", ld.Digest, err)
	}
	defer rc.Close()
	rep.emit(Progress{Digest: ld.Digest, State: StateDownloading, Total: ld.Size})
	cr := &countingReader{r: ctxReader{ctx, rc}, total: ld.Size, state: StateDownloading, d: ld.Digest, rep: rep}
	// A remote layer's compressed stream checks itself: go-containerregistry
	// reads at most the descriptor's size and fails at the end unless the
	// bytes had the descriptor's digest (TestPullFailureLeavesStoreUnchanged
	// holds it to that), so the blob is stored without hashing it again.
	// Nor is it decompressed here to check the config's diff ID: that
	// doubled a pull's CPU time, and engine/rootfs checks diff IDs as it
	// unpacks the layers (containerd's model: digests at fetch, diff IDs
	// at unpack).
	digest, size, err := st.blobs.writeBlobTo(cr, nil, ld.Digest)
	if err != nil {
		return false, fmt.Errorf("fetching layer %s: %w", ld.Digest, err)
	}
	rep.emit(Progress{Digest: ld.Digest, State: StateVerifying, Current: size, Total: ld.Size})
	if digest != ld.Digest || size != ld.Size {
		os.Remove(st.blobs.path(digest))
		return false, fmt.Errorf("layer %s is corrupt: got %d bytes with digest %s", ld.Digest, size, digest)
	}
	return true, nil
}

// ctxReader stops a copy when ctx is done, even if the connection stalls
// between reads only briefly each time.
type ctxReader struct {
	ctx context.Context
	r   interface{ Read([]byte) (int, error) }
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// remoteError turns a registry or network failure into one line that says
// what failed, classified for the edges.
func remoteError(op string, r name.Reference, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s %s: %w", op, FamiliarName(r), err)
	}
	reg := r.Context().RegistryStr()
	var te *transport.Error
	if errors.As(err, &te) {
		code := ""
		if len(te.Errors) > 0 {
			code = string(te.Errors[0].Code)
		}
		switch {
		case code == string(transport.ManifestUnknownErrorCode) || code == string(transport.NameUnknownErrorCode) ||
			te.StatusCode == http.StatusNotFound:
			return errs.New(errdefs.ErrNotFound, "%s %s: not found in registry %s", op, FamiliarName(r), reg)
		case code == string(transport.UnauthorizedErrorCode) || code == string(transport.DeniedErrorCode) ||
			te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden:
			return errs.New(errdefs.ErrPermissionDenied, "%s %s: access denied by registry %s: the repository does not exist or needs `%s`", op, FamiliarName(r), reg, loginHint(reg))
		}
		return errs.New(errdefs.ErrUnavailable, "%s %s: registry %s: %s", op, FamiliarName(r), reg, oneLineErr(te))
	}
	if why, ok := networkCause(err); ok {
		return errs.New(errdefs.ErrUnavailable, "%s %s: cannot reach registry %s: %s", op, FamiliarName(r), reg, why)
	}
	return fmt.Errorf("%s %s: %w", op, FamiliarName(r), err)
}

// loginHint is the login command for a registry: without an argument for
// the default one.
func loginHint(reg string) string {
	if reg == name.DefaultRegistry {
		return "vmctl login"
	}
	return "vmctl login " + reg
}

// networkCause extracts the reason a connection failed ("connect:
// connection refused"), without the URL and method around it.
func networkCause(err error) (string, bool) {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Err.Error(), true
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return de.Error(), true
	}
	return "", false
}

func oneLineErr(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}
