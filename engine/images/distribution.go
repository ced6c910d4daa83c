package images

import (
	"context"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Distribution is what a registry says of a reference without pulling it
// (GET /distribution/{name}/json, docker-py's get_registry_data): the
// descriptor of the manifest or index the reference names, and the
// platforms it serves.
type Distribution struct {
	Descriptor v1.Descriptor
	Platforms  []v1.Platform
}

// Inspect asks the registry for ref's manifest (or index) and, for an
// index, its platforms; for a single manifest, its config's platform.
func Inspect(ctx context.Context, ref string, opts RemoteOptions) (Distribution, error) {
	r, err := ParseRemoteReference(ref)
	if err != nil {
		return Distribution{}, err
	}
	desc, err := remote.Get(r, opts.remote(ctx)...)
	if err != nil {
		return Distribution{}, remoteError("inspect", r, err)
	}
	out := Distribution{Descriptor: desc.Descriptor}
	out.Descriptor.Platform = nil
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return Distribution{}, remoteError("inspect", r, err)
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return Distribution{}, remoteError("inspect", r, err)
		}
		for _, d := range m.Manifests {
			if d.Platform != nil {
				out.Platforms = append(out.Platforms, *d.Platform)
			}
		}
		return out, nil
	}
	img, err := desc.Image()
	if err != nil {
		return Distribution{}, remoteError("inspect", r, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return Distribution{}, remoteError("inspect", r, err)
	}
	out.Platforms = []v1.Platform{{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant, OSVersion: cf.OSVersion}}
	return out, nil
}
