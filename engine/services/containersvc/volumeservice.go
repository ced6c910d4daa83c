package containersvc

import (
	"context"

	"github.com/vmctl/vmctl/engine/volumes"
)

// VolumeService holds the named volumes containers mount
// (engine/services/volumesvc): it creates the missing ones with the
// container's record, claims them for a start, and removes anonymous ones
// with their container.
type VolumeService interface {
	// Use makes sure the volumes exist and calls record with them while
	// no volume can be removed.
	Use(ctx context.Context, reqs []volumes.CreateOptions, record func(map[string]*volumes.Volume) error) error
	// Claim holds the volumes for a start until release.
	Claim(ctx context.Context, names []string) (release func(), err error)
	Get(name string) (*volumes.Volume, error)
	// Remove refuses a volume a container references; with force, a
	// missing volume is not an error.
	Remove(ctx context.Context, name string, force bool) error
}
