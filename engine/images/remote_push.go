package images

import (
	"context"
	"io"
	"sync/atomic"

	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"

	"github.com/vmctl/vmctl/engine/errs"
)

// PushResult is what Docker prints after a push: "TAG: digest: D size: N".
type PushResult struct {
	Tag    string // the tag pushed, e.g. "latest"
	Digest string // manifest digest
	Size   int64  // manifest size
}

// Push sends the stored image ref names to the registry its name points
// at: layers and config first (blobs the registry already has are not sent:
// go-containerregistry asks with a HEAD before each upload), then the
// manifest, unchanged, so the image keeps its digest.
func (s *Store) Push(ctx context.Context, ref string, opts RemoteOptions) (PushResult, error) {
	r, err := ParseRemoteReference(ref)
	if err != nil {
		return PushResult{}, err
	}
	tag, ok := r.(name.Tag)
	if !ok {
		return PushResult{}, errs.New(errdefs.ErrInvalidArgument, "push %s: push needs a name with a tag, not a digest", ref)
	}
	local, err := s.Resolve(ctx, tag.Name())
	if err != nil {
		return PushResult{}, err
	}
	img := local.Content()
	pusher, err := remote.NewPusher(opts.remote(ctx)...)
	if err != nil {
		return PushResult{}, err
	}
	rep := newReporter(opts.Progress)
	layers, err := img.Layers()
	if err != nil {
		return PushResult{}, err
	}
	cfg, err := partial.ConfigLayer(img)
	if err != nil {
		return PushResult{}, err
	}
	type item struct {
		l      v1.Layer
		d      v1.Hash
		size   int64
		report bool // config blobs are sent silently, as Docker does
	}
	var items []item
	for _, l := range append(layers, cfg) {
		d, err := l.Digest()
		if err != nil {
			return PushResult{}, err
		}
		size, err := l.Size()
		if err != nil {
			return PushResult{}, err
		}
		it := item{l: l, d: d, size: size, report: l != cfg}
		if it.report {
			rep.emit(Progress{Digest: d, State: StatePreparing, Total: size})
		}
		items = append(items, it)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(opts.jobs())
	for _, it := range items {
		g.Go(func() error {
			var r *reporter
			if it.report {
				r = rep
			}
			cl := &countedLayer{Layer: it.l, d: it.d, size: it.size, rep: r}
			if err := pusher.Upload(gctx, tag.Context(), cl); err != nil {
				return err
			}
			if !it.report {
				return nil
			}
			// Upload opens the blob only when the registry lacks it.
			if cl.opened.Load() {
				rep.emit(Progress{Digest: it.d, State: StatePushed, Current: it.size, Total: it.size})
			} else {
				rep.emit(Progress{Digest: it.d, State: StateLayerExists, Total: it.size})
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return PushResult{}, remoteError("push", tag, err)
	}
	if err := pusher.Put(ctx, tag, img); err != nil {
		return PushResult{}, remoteError("push", tag, err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		return PushResult{}, err
	}
	if m, err := v1.NewHash(local.Digest); err == nil {
		// The image is pushed; failing to note where is not a push failure.
		s.recordPush(ctx, m, tag.Context(), m)
	}
	return PushResult{Tag: tag.TagStr(), Digest: local.Digest, Size: int64(len(raw))}, nil
}

// countedLayer reports the bytes read from its compressed blob and
// remembers whether anything opened it.
type countedLayer struct {
	v1.Layer
	d      v1.Hash
	size   int64
	rep    *reporter
	opened atomic.Bool
}

func (c *countedLayer) Compressed() (io.ReadCloser, error) {
	rc, err := c.Layer.Compressed()
	if err != nil {
		return nil, err
	}
	c.opened.Store(true)
	if c.rep == nil {
		return rc, nil
	}
	c.rep.emit(Progress{Digest: c.d, State: StatePushing, Total: c.size})
	return struct {
		io.Reader
		io.Closer
	}{&countingReader{r: rc, total: c.size, state: StatePushing, d: c.d, rep: c.rep}, rc}, nil
}
