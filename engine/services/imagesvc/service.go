// Package imagesvc is the image service: images as the API uses them, over
// the image store (engine/images). It lists, inspects, pulls, pushes, tags,
// loads, saves and removes images, reports each of those on the event bus
// as dockerd does, and keeps what a removal must respect outside the store:
// an image a container uses is not deleted, and a deleted image's cached
// disk (engine/rootfs) goes with it.
//
// It has no transport code: progress goes to a callback, archives to an
// io.Writer, and errors keep the classes the store gave them.
package imagesvc

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vmctl/vmctl/engine/build"
	"github.com/vmctl/vmctl/engine/events"
	"github.com/vmctl/vmctl/engine/images"
)

// The service hands out the store's domain types, so that its users need
// not import the store.
type (
	// Image is a stored image as users see it.
	Image = images.Image
	// LoadedImage is an image a load stored, with the archive's tags.
	LoadedImage = images.LoadedImage
	// RemoveResult lists what a removal untagged and deleted.
	RemoveResult = images.RemoveResult
	// PushResult is what docker prints after a push.
	PushResult = images.PushResult
	// RemoteOptions carries credentials and a progress callback to a pull
	// or a push.
	RemoteOptions = images.RemoteOptions
	// Progress is one event about one layer of a pull or push.
	Progress = images.Progress
)

// Disks deletes the cached read-only disks that no image of live needs
// (rootfs.Builder).
type Disks interface {
	Prune(ctx context.Context, live []images.Image) (int, error)
}

// Config wires a Service.
type Config struct {
	Store *images.Store
	// Disks, if set, loses the disks that a removal leaves no image using.
	Disks Disks
	// InUse names a container, running or not, made from the image with
	// this ID; nil means none ever is.
	InUse func(imageID string) (container string, used bool)
	// Events receives the image events; nil reports none.
	Events events.Publisher
	// BuildRunner runs the RUN steps of builds; nil refuses them.
	BuildRunner build.Runner
	// Containers gives commits their containers; nil refuses commits.
	Containers Containers
}

// Service manages images and reports their events.
type Service struct {
	cfg Config
}

// New returns a Service over cfg.Store.
func New(cfg Config) *Service { return &Service{cfg: cfg} }

// publish reports an image event as dockerd does: the actor is the image
// (an ID, or the reference for pull and push) and its name the reference
// the action was about.
func (s *Service) publish(action, id, name string) {
	if s.cfg.Events != nil {
		s.cfg.Events.Publish(events.Event{Type: events.TypeImage, Action: action, ID: id,
			Attributes: map[string]string{"name": name}})
	}
}

// imageID is ref's image ID, for the events of actions that leave the
// image in the store; ref itself if it no longer resolves.
func (s *Service) imageID(ctx context.Context, ref string) string {
	if img, err := s.cfg.Store.Resolve(ctx, ref); err == nil {
		return img.ID
	}
	return ref
}

// List returns every stored image, newest first.
func (s *Service) List(ctx context.Context) ([]Image, error) { return s.cfg.Store.List(ctx) }

// Resolve returns the image ref names: a name, a tag, a digest reference,
// or a full or short ID.
func (s *Service) Resolve(ctx context.Context, ref string) (Image, error) {
	return s.cfg.Store.Resolve(ctx, ref)
}

// Inspection is an image with what docker image inspect shows beyond the
// listing.
type Inspection struct {
	Image
	// Layers are the diff IDs of the image's layers, bottom first; empty
	// if its config cannot be read.
	Layers []string
}

// Inspect resolves ref as Resolve does and reads the image's layers.
func (s *Service) Inspect(ctx context.Context, ref string) (Inspection, error) {
	img, err := s.cfg.Store.Resolve(ctx, ref)
	if err != nil {
		return Inspection{}, err
	}
	out := Inspection{Image: img}
	if content := img.Content(); content != nil {
		if cf, err := content.ConfigFile(); err == nil {
			for _, d := range cf.RootFS.DiffIDs {
				out.Layers = append(out.Layers, d.String())
			}
		}
	}
	return out, nil
}

// Tag points target (a name with an optional tag) at the image source
// names, and reports it under target as given.
func (s *Service) Tag(ctx context.Context, source, target string) error {
	if err := s.cfg.Store.Tag(ctx, source, target); err != nil {
		return err
	}
	s.publish("tag", s.imageID(ctx, target), target)
	return nil
}

// Remove untags or deletes an image, as docker rmi does: an image a
// container uses (running or not) is not deleted (refused, or with force
// only untagged), and a deleted image's cached disk goes with it. Each
// untagged name and deleted image is reported.
func (s *Service) Remove(ctx context.Context, ref string, force bool) (RemoveResult, error) {
	id := s.imageID(ctx, ref) // for the untag events, before it may go
	res, err := s.cfg.Store.Remove(ctx, ref, images.RemoveOptions{Force: force, InUse: s.cfg.InUse})
	// Whatever was done is reported, also when the blobs could not all be
	// freed afterwards.
	for _, t := range res.Untagged {
		s.publish("untag", id, t)
	}
	for _, d := range res.Deleted {
		s.publish("delete", d, d)
	}
	if err != nil {
		return res, err
	}
	if s.cfg.Disks != nil && len(res.Deleted) > 0 {
		// Disks are shared by images with the same layers, so what goes
		// is what the images left do not use.
		live, err := s.cfg.Store.List(ctx)
		if err == nil {
			_, err = s.cfg.Disks.Prune(ctx, live)
		}
		if err != nil {
			return res, fmt.Errorf("image %s removed, but not its disk: %w", strings.Join(res.Deleted, ", "), err)
		}
	}
	return res, nil
}

// HistoryEntry is one step of an image's history, as docker history
// shows it.
type HistoryEntry struct {
	// ID is the image's own ID for its newest step, "<missing>" for the
	// others (the store keeps no parent chain), as dockerd shows pulled
	// images.
	ID        string
	Created   time.Time
	CreatedBy string
	Comment   string
	// Size is the step's layer as stored (compressed), 0 for a step
	// without a layer.
	Size int64
	Tags []string
}

// History returns the steps that made the image ref names, newest first.
func (s *Service) History(ctx context.Context, ref string) ([]HistoryEntry, error) {
	img, err := s.cfg.Store.Resolve(ctx, ref)
	if err != nil {
		return nil, err
	}
	content := img.Content()
	cf, err := content.ConfigFile()
	if err != nil {
		return nil, err
	}
	m, err := content.Manifest()
	if err != nil {
		return nil, err
	}
	var out []HistoryEntry
	layer := 0
	for _, h := range cf.History {
		e := HistoryEntry{ID: "<missing>", Created: h.Created.Time, CreatedBy: h.CreatedBy, Comment: h.Comment}
		if !h.EmptyLayer && layer < len(m.Layers) {
			e.Size = m.Layers[layer].Size
			layer++
		}
		out = append(out, e)
	}
	slices.Reverse(out)
	if len(out) == 0 {
		out = append(out, HistoryEntry{Created: img.Created})
	}
	out[0].ID, out[0].Tags = img.ID, img.RepoTags
	return out, nil
}

// PruneResult is what a prune deleted, and the unpacked size of the
// images it deleted.
type PruneResult struct {
	Deleted []string
	Freed   uint64
}

// Prune deletes images nothing names or uses, as docker image prune
// does: untagged ones (a build's intermediate images among them), or
// with all every image no container uses; with buildCacheOnly just a
// build's intermediate images (docker builder prune). An image deleted
// meanwhile by another is skipped.
func (s *Service) Prune(ctx context.Context, all, buildCacheOnly bool) (PruneResult, error) {
	list, err := s.cfg.Store.List(ctx)
	if err != nil {
		return PruneResult{}, err
	}
	var res PruneResult
	for _, img := range list {
		switch {
		case buildCacheOnly && (img.BuildCacheKey == "" || len(img.RepoTags) > 0):
			continue
		case !all && len(img.RepoTags) > 0:
			continue
		}
		if s.cfg.InUse != nil {
			if _, used := s.cfg.InUse(img.ID); used {
				continue
			}
		}
		r, err := s.Remove(ctx, img.ID, true)
		if errors.Is(err, images.ErrNotFound) {
			continue
		}
		if err != nil {
			return res, err
		}
		if len(r.Deleted) > 0 {
			res.Deleted = append(res.Deleted, r.Deleted...)
			res.Freed += uint64(max(img.Size, 0))
		}
	}
	return res, nil
}
