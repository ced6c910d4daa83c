package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmctl/vmctl/engine"
)

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "daemon.json")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	parse := func(path string, explicit bool, args ...string) (engine.Config, hostList, poolList, error) {
		fs := flag.NewFlagSet("vmctld", flag.ContinueOnError)
		cfg := engine.Config{DataRoot: "/var/lib/vmctl"}
		var hosts hostList
		var pools poolList
		fs.StringVar(&cfg.DataRoot, "data-root", cfg.DataRoot, "")
		fs.StringVar(&cfg.Network.BIP, "bip", "", "")
		fs.Var(&hosts, "H", "")
		fs.Var(&pools, "default-address-pool", "")
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		err := applyConfigFile(fs, path, explicit, &cfg, &hosts, &pools)
		return cfg, hosts, pools, err
	}

	// No file at the default path: the flags as they are.
	cfg, _, _, err := parse(filepath.Join(dir, "missing.json"), false, "--bip", "10.1.0.1/24")
	if err != nil || cfg.Network.BIP != "10.1.0.1/24" {
		t.Errorf("missing default file: %+v, %v", cfg.Network, err)
	}
	// ... but one given with --config-file must exist.
	if _, _, _, err := parse(filepath.Join(dir, "missing.json"), true); err == nil {
		t.Error("a missing --config-file was accepted")
	}

	p := write(`{"bip": "10.2.0.1/16", "fixed-cidr": "10.2.1.0/24", "mtu": 1400, "hosts": ["unix:///tmp/x.sock"],
		"default-address-pools": [{"base": "10.50.0.0/16", "size": 24}], "data-root": "/srv/vmctl"}`)
	cfg, hosts, pools, err := parse(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Network.BIP != "10.2.0.1/16" || cfg.Network.FixedCIDR != "10.2.1.0/24" || cfg.Network.MTU != 1400 || cfg.DataRoot != "/srv/vmctl" ||
		len(hosts) != 1 || hosts[0] != "unix:///tmp/x.sock" || len(pools) != 1 || pools[0].Size != 24 || pools[0].Base.String() != "10.50.0.0/16" {
		t.Errorf("from the file: %+v %+v hosts %v pools %v", cfg.Network, cfg.DataRoot, hosts, pools)
	}

	// A directive both as a flag and in the file, as dockerd: refused,
	// naming it.
	if _, _, _, err := parse(p, true, "--bip", "10.9.0.1/24"); err == nil || !strings.Contains(err.Error(), "bip") {
		t.Errorf("bip as a flag and in the file = %v, want an error naming bip", err)
	}
	if _, _, _, err := parse(p, true, "-H", "unix:///tmp/y.sock"); err == nil || !strings.Contains(err.Error(), "hosts") {
		t.Errorf("-H and hosts in the file = %v, want an error naming hosts", err)
	}
	// A flag the file does not set goes with it.
	p = write(`{"mtu": 9000}`)
	if cfg, _, _, err := parse(p, true, "--bip", "10.3.0.1/24"); err != nil || cfg.Network.BIP != "10.3.0.1/24" || cfg.Network.MTU != 9000 {
		t.Errorf("flag and file together: %+v, %v", cfg.Network, err)
	}
	// dockerd's userland-proxy: false carries published ports by DNAT alone.
	if cfg, _, _, err := parse(write(`{"userland-proxy": false}`), true); err != nil || !cfg.Network.KernelPorts {
		t.Errorf(`{"userland-proxy": false}: KernelPorts %v, %v; want true`, cfg.Network.KernelPorts, err)
	}
	if cfg, _, _, err := parse(write(`{"userland-proxy": true}`), true); err != nil || cfg.Network.KernelPorts {
		t.Errorf(`{"userland-proxy": true}: KernelPorts %v, %v; want false`, cfg.Network.KernelPorts, err)
	}
	// dockerd's debug: the --debug flag, which logs every request.
	{
		fs := flag.NewFlagSet("vmctld", flag.ContinueOnError)
		debug := fs.Bool("debug", false, "")
		var cfg engine.Config
		if err := applyConfigFile(fs, write(`{"debug": true}`), true, &cfg, &hostList{}, &poolList{}); err != nil || !*debug {
			t.Errorf(`{"debug": true}: debug %v, %v; want true`, *debug, err)
		}
		fs.BoolVar(new(bool), "D", false, "")
		if err := fs.Parse([]string{"-D"}); err != nil {
			t.Fatal(err)
		}
		if err := applyConfigFile(fs, write(`{"debug": true}`), true, &cfg, &hostList{}, &poolList{}); err == nil {
			t.Error(`{"debug": true} with -D: no error, want one naming both`)
		}
	}
	for _, bad := range []string{`{"bridge": "br0"}`, `{"mtu": "big"}`, `{"userland-proxy": "no"}`, `{`, `{"default-address-pools": [{"base": "10.0.0.0/8", "size": 4}]}`} {
		if _, _, _, err := parse(write(bad), true); err == nil {
			t.Errorf("configuration %s accepted", bad)
		}
	}
}
