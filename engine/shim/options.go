package shim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	runtimeoptions "github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Options are the runtime options a task may carry: containerd's generic
// runtime options (runtimeoptions.v1.Options) naming a JSON file, from
// `ctr run --runtime-config-path FILE` or, for CRI, the runtime's
// `options` table (ConfigPath = "FILE"). The file's keys:
//
//	{"hypervisor": "auto" | "kvm" | "qemu"}
type Options struct {
	Hypervisor string `json:"hypervisor,omitempty"`
}

// runtimeOptionsURL is the type URL of runtimeoptions.v1.Options.
const runtimeOptionsURL = "runtimeoptions.v1.Options"

// parseOptions reads a task's options; anything else than vmctl's is
// refused in one line.
func parseOptions(a *anypb.Any) (Options, error) {
	var o Options
	if a == nil || len(a.GetValue()) == 0 && a.GetTypeUrl() == "" {
		return o, nil
	}
	if a.GetTypeUrl() != runtimeOptionsURL && a.GetTypeUrl() != "type.googleapis.com/"+runtimeOptionsURL {
		return o, fmt.Errorf("%w: runtime options of type %s are not io.containerd.vmctl.v1's (want runtimeoptions.v1.Options naming a JSON file)", errdefs.ErrInvalidArgument, a.GetTypeUrl())
	}
	var ro runtimeoptions.Options
	if err := proto.Unmarshal(a.GetValue(), &ro); err != nil {
		return o, fmt.Errorf("%w: runtime options: %v", errdefs.ErrInvalidArgument, err)
	}
	body := ro.GetConfigBody()
	if p := ro.GetConfigPath(); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return o, fmt.Errorf("%w: runtime config: %v", errdefs.ErrInvalidArgument, err)
		}
		body = b
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return o, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		return o, fmt.Errorf("%w: runtime config: %v (want JSON with the key \"hypervisor\")", errdefs.ErrInvalidArgument, err)
	}
	if dec.More() {
		return o, fmt.Errorf("%w: runtime config: more than one JSON value", errdefs.ErrInvalidArgument)
	}
	switch o.Hypervisor {
	case "", "auto", "kvm", "qemu":
	default:
		return o, fmt.Errorf("%w: runtime config: hypervisor %q: want auto, kvm or qemu", errdefs.ErrInvalidArgument, o.Hypervisor)
	}
	return o, nil
}
