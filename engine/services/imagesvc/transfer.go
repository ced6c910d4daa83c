package imagesvc

// Images in and out of the store: pull and push (registries), load and
// save (archives).

import (
	"context"
	"io"

	"github.com/vmctl/vmctl/engine/images"
)

// Pulled is the result of a pull.
type Pulled struct {
	Image Image
	// Name is the reference pulled, familiar form ("busybox:latest").
	Name string
}

// Pull fetches ref from its registry and stores it (see images.Store.Pull).
// A malformed reference fails before anything is fetched or reported.
func (s *Service) Pull(ctx context.Context, ref string, opts RemoteOptions) (Pulled, error) {
	r, err := images.ParseRemoteReference(ref)
	if err != nil {
		return Pulled{}, err
	}
	img, err := s.cfg.Store.Pull(ctx, ref, opts)
	if err != nil {
		return Pulled{}, err
	}
	name := images.FamiliarName(r)
	s.publish("pull", name, name)
	return Pulled{Image: img, Name: name}, nil
}

// PushTargets returns what a push of repo sends, checked before anything
// is: with a tag, repo:tag, which must be stored (else ErrNotFound); without
// one, every stored tag of repo, as docker push does. repository is the
// repository's full name ("docker.io/library/busybox").
func (s *Service) PushTargets(ctx context.Context, repo, tag string) (repository string, refs []string, err error) {
	if tag != "" {
		ref := repo + ":" + tag
		if _, err := images.ParseRemoteReference(ref); err != nil {
			return "", nil, err
		}
		if _, err := s.cfg.Store.Resolve(ctx, ref); err != nil {
			return "", nil, err
		}
		refs = []string{ref}
	} else if refs, err = s.cfg.Store.RepositoryTags(ctx, repo); err != nil {
		return "", nil, err
	}
	r, err := images.ParseRemoteReference(refs[0])
	if err != nil {
		return "", nil, err
	}
	return r.Context().Name(), refs, nil
}

// Push sends the stored image ref names to its registry (see
// images.Store.Push) and reports it.
func (s *Service) Push(ctx context.Context, ref string, opts RemoteOptions) (PushResult, error) {
	res, err := s.cfg.Store.Push(ctx, ref, opts)
	if err != nil {
		return res, err
	}
	s.publish("push", ref, ref)
	return res, nil
}

// Load imports the images of a docker save or OCI layout archive; nothing
// is stored unless every image in it verifies. Each image stored is
// reported under its first tag from the archive, or its ID.
func (s *Service) Load(ctx context.Context, r io.Reader) ([]LoadedImage, error) {
	loaded, err := s.cfg.Store.LoadArchive(ctx, r)
	if err != nil {
		return nil, err
	}
	for _, img := range loaded {
		name := img.ID
		if len(img.Tags) > 0 {
			name = img.Tags[0]
		}
		s.publish("load", img.ID, name)
	}
	return loaded, nil
}

// Archive is a docker save archive of resolved images, ready to write.
type Archive struct {
	named []images.NamedImage
}

// Save resolves refs for an archive, every one before anything is written,
// so that a bad reference fails the save while nothing has been sent (see
// images.Store.ForSave).
func (s *Service) Save(ctx context.Context, refs []string) (*Archive, error) {
	named, err := s.cfg.Store.ForSave(ctx, refs)
	if err != nil {
		return nil, err
	}
	return &Archive{named: named}, nil
}

// Write writes the archive to w as docker save does. Blobs are copied from
// the store; an image removed meanwhile makes it fail part way.
func (a *Archive) Write(w io.Writer) error {
	return images.WriteArchive(w, images.FormatDocker, a.named)
}

// Distribution is a registry's answer for a reference (images.Inspect).
type Distribution = images.Distribution

// Distribution asks the registry about ref without pulling it.
func (s *Service) Distribution(ctx context.Context, ref string, o RemoteOptions) (Distribution, error) {
	return images.Inspect(ctx, ref, o)
}

// CheckLogin checks user and password against a registry, as dockerd's
// POST /auth does, and returns the registry's name as users know it (see
// images.CheckLogin). Nothing is stored: the client keeps credentials.
func (s *Service) CheckLogin(ctx context.Context, server, user, password string) (string, error) {
	return images.CheckLogin(ctx, server, user, password, images.RemoteOptions{})
}
