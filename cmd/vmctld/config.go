package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/vmctl/vmctl/engine"
)

// defaultConfigFile is read when --config-file is not given, as dockerd
// reads /etc/docker/daemon.json; it need not exist.
const defaultConfigFile = "/etc/vmctl/daemon.json"

// daemonFile holds the directives of the configuration file, under
// dockerd's daemon.json names.
type daemonFile struct {
	DataRoot            string            `json:"data-root"`
	ExecRoot            string            `json:"exec-root"`
	Hosts               []string          `json:"hosts"`
	BIP                 string            `json:"bip"`
	FixedCIDR           string            `json:"fixed-cidr"`
	DefaultAddressPools []addressPool     `json:"default-address-pools"`
	MTU                 int               `json:"mtu"`
	UserlandProxy       bool              `json:"userland-proxy"`
	Snapshots           bool              `json:"snapshots"`
	Debug               bool              `json:"debug"`
	LogDriver           string            `json:"log-driver"`
	LogOpts             map[string]string `json:"log-opts"`
}

type addressPool struct {
	Base string `json:"base"`
	Size int    `json:"size"`
}

// fileDirectives maps each flag a directive stands for to its name in the
// file.
var fileDirectives = map[string]string{
	"data-root": "data-root", "exec-root": "exec-root", "H": "hosts", "host": "hosts",
	"bip": "bip", "fixed-cidr": "fixed-cidr", "default-address-pool": "default-address-pools", "mtu": "mtu",
	"userland-proxy": "userland-proxy", "snapshots": "snapshots", "D": "debug", "debug": "debug",
}

// applyConfigFile reads the configuration file at path into what the flags
// of fset left unset. A missing file is an error only when explicit (given
// with --config-file). As dockerd, it refuses unknown directives and a
// directive given both as a flag and in the file.
func applyConfigFile(fset *flag.FlagSet, path string, explicit bool, cfg *engine.Config, hosts *hostList, pools *poolList) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return fmt.Errorf("configuration file: %w", err)
	}
	var f daemonFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("configuration file %s: %w", path, err)
	}
	present := map[string]bool{}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("configuration file %s: %w", path, err)
	}
	for k := range raw {
		present[k] = true
	}
	var both []string
	fset.Visit(func(fl *flag.Flag) {
		if d, ok := fileDirectives[fl.Name]; ok && present[d] {
			both = append(both, fmt.Sprintf("%s (flag --%s %s)", d, fl.Name, fl.Value))
		}
	})
	if len(both) > 0 {
		sort.Strings(both)
		return fmt.Errorf("the following directives are specified both as a flag and in the configuration file %s: %s", path, strings.Join(both, ", "))
	}
	if present["data-root"] {
		cfg.DataRoot = f.DataRoot
	}
	if present["exec-root"] {
		cfg.ExecRoot = f.ExecRoot
	}
	if present["hosts"] {
		*hosts = append(*hosts, f.Hosts...)
	}
	if present["bip"] {
		cfg.Network.BIP = f.BIP
	}
	if present["fixed-cidr"] {
		cfg.Network.FixedCIDR = f.FixedCIDR
	}
	if present["mtu"] {
		cfg.Network.MTU = f.MTU
	}
	if present["userland-proxy"] {
		cfg.Network.KernelPorts = !f.UserlandProxy
	}
	if present["snapshots"] {
		cfg.NoSnapshots = !f.Snapshots
	}
	if present["debug"] {
		if err := fset.Set("debug", strconv.FormatBool(f.Debug)); err != nil {
			return fmt.Errorf("configuration file %s: debug: %w", path, err)
		}
	}
	if present["log-driver"] && f.LogDriver != "json-file" && f.LogDriver != "local" {
		return fmt.Errorf("configuration file %s: log-driver %q: containers log to the daemon's own log (json-file)", path, f.LogDriver)
	}
	if present["log-opts"] {
		cfg.LogOptions = f.LogOpts
	}
	for _, p := range f.DefaultAddressPools {
		if err := pools.Set(fmt.Sprintf("base=%s,size=%d", p.Base, p.Size)); err != nil {
			return fmt.Errorf("configuration file %s: default-address-pools: %w", path, err)
		}
	}
	return nil
}
