package server

// What the API needs of each engine service, declared here where it is
// used: the handlers depend on these, never on the stores or the engine's
// wiring. New takes the engine's services (engine/services), which
// satisfy them.

import (
	"context"
	"io"
	"syscall"
	"time"

	"github.com/vmctl/vmctl/engine/events"
	"github.com/vmctl/vmctl/engine/services/containersvc"
	"github.com/vmctl/vmctl/engine/services/imagesvc"
	"github.com/vmctl/vmctl/engine/services/networksvc"
	"github.com/vmctl/vmctl/engine/services/systemsvc"
	"github.com/vmctl/vmctl/engine/services/volumesvc"
)

// ContainerService runs containers (containersvc.Service).
type ContainerService interface {
	Create(ctx context.Context, o containersvc.CreateOptions) (*containersvc.Container, error)
	StatPath(ctx context.Context, ref, path string) (containersvc.PathStat, error)
	ArchivePath(ctx context.Context, ref, path string, open func(containersvc.PathStat) io.Writer) error
	CopyIn(ctx context.Context, ref, dir string, r io.Reader, keepOwners, noOverwriteDirNonDir bool) error
	Get(ref string) (*containersvc.Container, error)
	Restarting(id string) bool
	WritableSize(id string) int64
	Rename(ctx context.Context, ref, name string) error
	Update(ctx context.Context, ref string, o containersvc.UpdateOptions) error
	Top(ctx context.Context, ref, psArgs string) (containersvc.TopResult, error)
	Stats(ctx context.Context, ref string) (containersvc.StatsSample, error)
	Pause(ctx context.Context, ref string) error
	Unpause(ctx context.Context, ref string) error
	Prune(ctx context.Context, match func(*containersvc.Container) bool) ([]string, uint64, error)
	List() ([]*containersvc.Container, error)
	Select(o containersvc.ListOptions) ([]*containersvc.Container, error)
	Start(ctx context.Context, ref string, stdio containersvc.Stdio) error
	Stop(ctx context.Context, ref string, timeout time.Duration) error
	Restart(ctx context.Context, ref string, timeout time.Duration) error
	Kill(ctx context.Context, ref string, sig syscall.Signal) error
	Resize(ctx context.Context, ref string, rows, cols uint16) error
	Remove(ctx context.Context, ref string, o containersvc.RemoveOptions) error
	PrepareWait(ref string, cond containersvc.WaitCondition) (func(context.Context) (containersvc.ExitStatus, error), error)
	Attach(ref string, o containersvc.AttachOptions) (*containersvc.Attachment, error)
	Detach(a *containersvc.Attachment)
	Logs(ctx context.Context, ref string, o containersvc.LogsOptions, emit func(containersvc.LogEntry) error) error
	ExecCreate(ref string, o containersvc.ExecOptions) (string, error)
	ExecInspect(id string) (containersvc.ExecInfo, error)
	ExecResize(ctx context.Context, id string, rows, cols uint16) error
	ExecStart(ctx context.Context, id string, stdio containersvc.Stdio, detach bool) error
}

// ImageService keeps images and moves them in and out (imagesvc.Service).
type ImageService interface {
	List(ctx context.Context) ([]imagesvc.Image, error)
	Inspect(ctx context.Context, ref string) (imagesvc.Inspection, error)
	History(ctx context.Context, ref string) ([]imagesvc.HistoryEntry, error)
	Tag(ctx context.Context, source, target string) error
	Remove(ctx context.Context, ref string, force bool) (imagesvc.RemoveResult, error)
	Pull(ctx context.Context, ref string, o imagesvc.RemoteOptions) (imagesvc.Pulled, error)
	Distribution(ctx context.Context, ref string, o imagesvc.RemoteOptions) (imagesvc.Distribution, error)
	PushTargets(ctx context.Context, repo, tag string) (repository string, refs []string, err error)
	Push(ctx context.Context, ref string, o imagesvc.RemoteOptions) (imagesvc.PushResult, error)
	Load(ctx context.Context, r io.Reader) ([]imagesvc.LoadedImage, error)
	Save(ctx context.Context, refs []string) (*imagesvc.Archive, error)
	CheckLogin(ctx context.Context, server, user, password string) (string, error)
	Build(ctx context.Context, req imagesvc.BuildRequest, contextTar io.Reader, out io.Writer) (imagesvc.BuildResult, error)
	Commit(ctx context.Context, req imagesvc.CommitRequest) (imagesvc.Image, error)
	Import(ctx context.Context, req imagesvc.ImportRequest) (imagesvc.Image, error)
	Diff(ctx context.Context, ref string) ([]imagesvc.Change, error)
	Prune(ctx context.Context, all, buildCacheOnly bool) (imagesvc.PruneResult, error)
	Export(ctx context.Context, ref string, w io.Writer) error
}

// VolumeService keeps named volumes (volumesvc.Service).
type VolumeService interface {
	Create(ctx context.Context, o volumesvc.CreateOptions) (*volumesvc.Volume, error)
	Get(name string) (*volumesvc.Volume, error)
	List(o volumesvc.ListOptions) ([]*volumesvc.Volume, error)
	Remove(ctx context.Context, name string, force bool) error
	Prune(ctx context.Context, o volumesvc.PruneOptions) (removed []string, freed uint64, err error)
}

// NetworkService keeps networks and the containers' endpoints on them
// (networksvc.Service). List and Prune take docker's filters and check
// them; the rules of networks (names, drivers, addresses, what a running
// container or the default network allows) are the service's.
type NetworkService interface {
	Create(ctx context.Context, o networksvc.CreateOptions) (networksvc.Network, error)
	Get(ctx context.Context, ref string) (networksvc.Network, error)
	NetworkEndpoints(ctx context.Context, ref string) ([]networksvc.Endpoint, error)
	List(ctx context.Context, filters map[string][]string) ([]networksvc.Network, error)
	Remove(ctx context.Context, ref string) error
	Prune(ctx context.Context, filters map[string][]string) ([]string, error)
	Connect(ctx context.Context, ref string, c networksvc.ContainerRef, o networksvc.EndpointOptions) (networksvc.Endpoint, error)
	Disconnect(ctx context.Context, ref, containerID string, force bool) error
	Endpoints(ctx context.Context, containerID string) ([]networksvc.Endpoint, error)
}

// SystemService describes the engine and the host (systemsvc.Service).
type SystemService interface {
	Version() systemsvc.Version
	Info(ctx context.Context) (systemsvc.Info, error)
}

// EventSource is where GET /events reads from (events.Bus).
type EventSource interface {
	Subscribe(since time.Time, match func(events.Event) bool) ([]events.Event, *events.Subscription)
}
