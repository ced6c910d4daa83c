package main

// The confinement, limit and log flags of run and create, with docker's
// syntax; the engine checks and applies them.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/docker/cli/opts"
	"github.com/moby/moby/api/types/container"
	"github.com/spf13/pflag"
)

type securityFlags struct {
	privileged      bool
	capAdd, capDrop []string
	securityOpt     []string
	readOnly        bool
	pidsLimit       int64
	ulimits         map[string]*container.Ulimit
	ulimitOpt       *opts.UlimitOpt
	sysctls         *opts.MapOpts
	tmpfs           []string
	oomScoreAdj     int
	devices         []string
	logDriver       string
	logOpts         []string
	init            bool
	stopTimeout     int
	groupAdd        []string
	healthCmd       string
	healthInterval  time.Duration
	healthTimeout   time.Duration
	healthStart     time.Duration
	healthRetries   int
	noHealthcheck   bool
	fs              *pflag.FlagSet
}

func (s *securityFlags) addFlags(f *pflag.FlagSet) {
	s.fs = f
	s.ulimits = map[string]*container.Ulimit{}
	s.ulimitOpt = opts.NewUlimitOpt(&s.ulimits)
	s.sysctls = opts.NewMapOpts(nil, opts.ValidateSysctl)
	f.BoolVar(&s.privileged, "privileged", false, "confine the container by its VM alone: every capability and VM device, no seccomp filter")
	f.StringArrayVar(&s.capAdd, "cap-add", nil, "add a Linux capability (NET_ADMIN, SYS_PTRACE..., or ALL)")
	f.StringArrayVar(&s.capDrop, "cap-drop", nil, "drop a Linux capability (or ALL)")
	f.StringArrayVar(&s.securityOpt, "security-opt", nil, "security option: no-new-privileges, seccomp=unconfined, seccomp=PROFILE.json")
	f.BoolVar(&s.readOnly, "read-only", false, "mount the container's root file system read-only")
	f.Int64Var(&s.pidsLimit, "pids-limit", 0, "limit the container's tasks (0 or -1: unlimited)")
	f.Var(s.ulimitOpt, "ulimit", "resource limit: NAME=SOFT[:HARD] (nofile=1024:2048)")
	f.Var(s.sysctls, "sysctl", "kernel parameter set in the container's VM: KEY=VALUE")
	f.StringArrayVar(&s.tmpfs, "tmpfs", nil, "mount a tmpfs: /path[:OPTIONS] (size=64m,mode=1777...)")
	f.IntVar(&s.oomScoreAdj, "oom-score-adj", 0, "the container's OOM score adjustment (-1000 to 1000)")
	f.StringArrayVar(&s.devices, "device", nil, "host device (not supported: the host's devices do not reach a VM)")
	f.StringVar(&s.logDriver, "log-driver", "", "log driver: json-file (the daemon's own log)")
	f.StringArrayVar(&s.logOpts, "log-opt", nil, "log option: max-size=SIZE, max-file=N")
	f.BoolVar(&s.init, "init", false, "run an init as PID 1 that forwards signals and reaps orphans")
	f.StringArrayVar(&s.groupAdd, "group-add", nil, "add a group to the container's processes (a name in the container's /etc/group, or a number)")
	f.StringVar(&s.healthCmd, "health-cmd", "", "command that checks the container's health (run with /bin/sh -c)")
	f.DurationVar(&s.healthInterval, "health-interval", 0, "time between health checks (default 30s)")
	f.DurationVar(&s.healthTimeout, "health-timeout", 0, "time a health check may take (default 30s)")
	f.DurationVar(&s.healthStart, "health-start-period", 0, "time after start when failed checks do not count")
	f.IntVar(&s.healthRetries, "health-retries", 0, "failures in a row that make the container unhealthy (default 3)")
	f.BoolVar(&s.noHealthcheck, "no-healthcheck", false, "disable the image's health check")
	f.IntVar(&s.stopTimeout, "stop-timeout", 0, "seconds a stop waits for the stop signal before SIGKILL (default 10; -1 forever)")
}

// applyConfig puts the flags that belong to Config into cfg.
func (s *securityFlags) applyConfig(cfg *container.Config) error {
	if s.fs != nil && s.fs.Changed("stop-timeout") {
		t := s.stopTimeout
		cfg.StopTimeout = &t
	}
	switch {
	case s.noHealthcheck && s.healthCmd != "":
		return fmt.Errorf("--no-healthcheck conflicts with --health-cmd")
	case s.noHealthcheck:
		cfg.Healthcheck = &container.HealthConfig{Test: []string{"NONE"}}
	case s.healthCmd != "":
		cfg.Healthcheck = &container.HealthConfig{Test: []string{"CMD-SHELL", s.healthCmd},
			Interval: s.healthInterval, Timeout: s.healthTimeout, StartPeriod: s.healthStart, Retries: s.healthRetries}
	}
	return nil
}

func (s *securityFlags) apply(hc *container.HostConfig) error {
	opts, err := securityOpts(s.securityOpt)
	if err != nil {
		return err
	}
	hc.Privileged, hc.CapAdd, hc.CapDrop, hc.SecurityOpt = s.privileged, s.capAdd, s.capDrop, opts
	hc.ReadonlyRootfs, hc.OomScoreAdj = s.readOnly, s.oomScoreAdj
	if s.pidsLimit != 0 {
		limit := s.pidsLimit
		hc.PidsLimit = &limit
	}
	if s.ulimitOpt != nil {
		hc.Ulimits = s.ulimitOpt.GetList()
	}
	if s.sysctls != nil && len(s.sysctls.GetAll()) > 0 {
		hc.Sysctls = s.sysctls.GetAll()
	}
	for _, t := range s.tmpfs {
		dst, options, _ := strings.Cut(t, ":")
		if dst == "" {
			return fmt.Errorf("invalid --tmpfs %q: want /path[:OPTIONS]", t)
		}
		if hc.Tmpfs == nil {
			hc.Tmpfs = map[string]string{}
		}
		hc.Tmpfs[dst] = options
	}
	hc.LogConfig.Type = s.logDriver
	hc.GroupAdd = s.groupAdd
	if s.init {
		init := true
		hc.Init = &init
	}
	for _, kv := range s.logOpts {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("invalid --log-opt %q: want KEY=VALUE", kv)
		}
		if hc.LogConfig.Config == nil {
			hc.LogConfig.Config = map[string]string{}
		}
		hc.LogConfig.Config[k] = v
	}
	for _, d := range s.devices {
		parts := strings.SplitN(d, ":", 3)
		m := container.DeviceMapping{PathOnHost: parts[0], PathInContainer: parts[0], CgroupPermissions: "rwm"}
		if len(parts) > 1 {
			m.PathInContainer = parts[1]
		}
		hc.Devices = append(hc.Devices, m)
	}
	return nil
}

// securityOpts is --security-opt as the API takes it: a seccomp profile
// named by its file is sent as the file's JSON, compacted, as the docker
// CLI sends it ("builtin" and "unconfined" are names, not files).
func securityOpts(opts []string) ([]string, error) {
	out := slices.Clone(opts)
	for i, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			k, v, _ = strings.Cut(o, ":")
		}
		if k != "seccomp" || v == "" || v == "builtin" || v == "unconfined" {
			continue
		}
		b, err := os.ReadFile(v)
		if err != nil {
			return nil, fmt.Errorf("--security-opt %s: %w", o, err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, b); err != nil {
			return nil, fmt.Errorf("--security-opt %s: the profile is not JSON: %w", o, err)
		}
		out[i] = "seccomp=" + compact.String()
	}
	return out, nil
}
