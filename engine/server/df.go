package server

import (
	"net/http"
	"syscall"
	"time"

	"github.com/moby/moby/api/types/image"
	"github.com/moby/moby/api/types/volume"

	"github.com/vmctl/vmctl/engine/services/volumesvc"
)

// diskUsage is GET /system/df in API 1.41's shape, which docker system df
// reads: every image with the number of containers using it, every
// container with the size of its writable disk, every volume with the space
// its disk takes and the number of containers mounting it. The build cache
// is the intermediate images, listed among the images, so it has no records
// of its own.
type diskUsage struct {
	LayersSize int64
	Images     []image.Summary
	Containers []containerSummary
	Volumes    []volume.Volume
	BuildCache []struct{}
}

func (s *Server) systemDF(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	imgs, err := s.images.List(ctx)
	if err != nil {
		writeError(w, err)
		return
	}
	ctrs, err := s.containers.List()
	if err != nil {
		writeError(w, err)
		return
	}
	out := diskUsage{Images: []image.Summary{}, Containers: []containerSummary{}, Volumes: []volume.Volume{}, BuildCache: []struct{}{}}
	users := map[string]int64{}
	mounts := map[string]int64{}
	for _, c := range ctrs {
		users[c.Config.ImageID]++
		for _, m := range c.Config.Mounts {
			mounts[m.Name]++
		}
	}
	sizes := map[string]int64{}
	for _, img := range imgs {
		sum := imageSummary(img)
		sum.Containers, sum.SharedSize = users[img.ID], 0
		out.Images = append(out.Images, sum)
		out.LayersSize += img.Size
		sizes[img.ID] = img.Size
	}
	now := time.Now()
	for _, c := range ctrs {
		sum, err := s.containerSummaryOf(ctx, c, now, sizes)
		if err != nil {
			writeError(w, err)
			return
		}
		out.Containers = append(out.Containers, sum)
	}
	vols, err := s.volumes.List(volumesvc.ListOptions{})
	if err != nil {
		writeError(w, err)
		return
	}
	for _, v := range vols {
		vj := volumeJSON(v)
		vj.UsageData = &volume.UsageData{Size: allocated(v.Disk), RefCount: mounts[v.Name]}
		out.Volumes = append(out.Volumes, vj)
	}
	writeJSON(w, http.StatusOK, out)
}

// allocated is the space a (sparse) disk file takes; -1 if unknown.
func allocated(path string) int64 {
	var st syscall.Stat_t
	if syscall.Stat(path, &st) != nil {
		return -1
	}
	return st.Blocks * 512
}
