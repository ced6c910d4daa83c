// Command vmctld is the vmctl daemon: it serves a Docker-compatible REST API
// over the engine, so the docker CLI (and vmctl) can run containers, each in
// its own VM. This file is wiring only; the API is engine/server.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/docker/go-units"

	"github.com/vmctl/vmctl/engine"
	"github.com/vmctl/vmctl/engine/networks"
	"github.com/vmctl/vmctl/engine/server"
)

type hostList []string

func (h *hostList) String() string     { return strings.Join(*h, ",") }
func (h *hostList) Set(v string) error { *h = append(*h, v); return nil }

// poolList is --default-address-pool, repeatable as dockerd's.
type poolList []networks.AddressPool

func (p *poolList) String() string {
	var s []string
	for _, x := range *p {
		s = append(s, fmt.Sprintf("base=%s,size=%d", x.Base, x.Size))
	}
	return strings.Join(s, " ")
}

func (p *poolList) Set(v string) error {
	pool, err := networks.ParseAddressPool(v)
	if err != nil {
		return err
	}
	*p = append(*p, pool)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "vmctld: "+err.Error())
		os.Exit(1)
	}
}

func run() error {
	var hosts hostList
	cfg := engine.Config{DetachVMs: true}
	flag.StringVar(&cfg.DataRoot, "data-root", "/var/lib/vmctl", "directory of persistent state: images, disks, containers")
	flag.Func("max-image-size", "the most one image may unpack to, e.g. 20g (default 32g)", func(v string) error {
		n, err := units.RAMInBytes(v)
		if err != nil || n <= 0 {
			return fmt.Errorf("want a size such as 20g")
		}
		cfg.MaxImageSize = n
		return nil
	})
	flag.StringVar(&cfg.ExecRoot, "exec-root", "/run/vmctl", "directory of runtime state (keep it short: unix socket paths are limited)")
	flag.StringVar(&cfg.Kernel, "kernel", os.Getenv("VMCTL_KERNEL"), "guest kernel (default: guest/vmlinuz next to this program, or ../lib/vmctl/guest/ when installed)")
	flag.StringVar(&cfg.Initrd, "initrd", os.Getenv("VMCTL_INITRD"), "guest image (default: guest/initramfs.img next to this program, or ../lib/vmctl/guest/ when installed)")
	flag.Var(&hosts, "H", "address to serve the API on: unix:///path, tcp://host:port, or fd:// for the sockets systemd passes (socket activation; repeatable; default "+server.DefaultHost+")")
	flag.Var(&hosts, "host", "same as -H")
	var pools poolList
	flag.StringVar(&cfg.Network.BIP, "bip", "", "the default network's gateway address and prefix (default 172.30.0.1/16, on bridge vmctl0)")
	flag.StringVar(&cfg.Network.FixedCIDR, "fixed-cidr", "", "the part of the default network's subnet that containers' addresses come from")
	flag.Var(&pools, "default-address-pool", "subnets for networks created without --subnet, as base=SUBNET,size=BITS (repeatable; default dockerd's)")
	flag.IntVar(&cfg.Network.MTU, "mtu", 0, "the MTU of the default network, and of other networks unless they set their own (default 1500)")
	snapshots := flag.Bool("snapshots", os.Getenv("VMCTL_SNAPSHOTS") != "false", "start containers' VMs from a guest saved once per VM shape, kernel, guest image and hypervisor (kept in DATA_ROOT/snapshots) instead of booting each; false (or env VMCTL_SNAPSHOTS=false): boot every VM")
	userlandProxy := flag.Bool("userland-proxy", true, "carry connections from the host's loopback and from containers to published ports through a proxy in vmctld; false: through DNAT alone (route_localnet on the bridges, with loopback-bound packets from containers dropped)")
	tlsOn := flag.Bool("tls", false, "serve tcp:// hosts over TLS (implied by --tlsverify)")
	tlsVerify := flag.Bool("tlsverify", false, "serve tcp:// hosts over TLS and let in only clients with a certificate signed by --tlscacert")
	tlsCA := flag.String("tlscacert", "", "CA of the clients' certificates (--tlsverify)")
	tlsCert := flag.String("tlscert", "", "the server's TLS certificate")
	tlsKey := flag.String("tlskey", "", "the server's TLS key")
	group := flag.String("group", "", "group that owns the unix sockets (0660), whose members may use the API (default: root's)")
	flag.StringVar(group, "G", "", "same as --group")
	debug := flag.Bool("debug", false, "log every API request: method, path, status and time taken")
	flag.BoolVar(debug, "D", false, "same as --debug")
	configFile := flag.String("config-file", defaultConfigFile, "daemon configuration file, JSON with dockerd's names for the flags above (data-root, exec-root, hosts, bip, fixed-cidr, default-address-pools, mtu, userland-proxy, snapshots, debug)")
	flag.Parse()
	cfg.Network.KernelPorts = !*userlandProxy
	cfg.NoSnapshots = !*snapshots
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config-file" })
	if err := applyConfigFile(flag.CommandLine, *configFile, explicit, &cfg, &hosts, &pools); err != nil {
		return err
	}
	cfg.Network.AddressPools = pools
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: vmctld takes only flags", flag.Arg(0))
	}
	if os.Geteuid() != 0 {
		return errors.New("vmctld must run as root: it creates disk images and VMs for containers")
	}
	if len(hosts) == 0 {
		hosts = hostList{server.DefaultHost}
	}
	var listenOpts server.ListenOptions
	listenOpts.Group = *group
	if *tlsOn || *tlsVerify {
		if *tlsCert == "" || *tlsKey == "" || *tlsVerify && *tlsCA == "" {
			return errors.New("--tls needs --tlscert and --tlskey; --tlsverify also --tlscacert")
		}
		tc, err := server.TLSConfig(*tlsCert, *tlsKey, *tlsCA, *tlsVerify)
		if err != nil {
			return err
		}
		listenOpts.TLS = tc
	}
	var listeners []net.Listener
	var names []string
	closeAll := func() {
		for _, l := range listeners {
			l.Close()
		}
	}
	for _, h := range hosts {
		if h == "fd://" {
			// Socket activation (vmctld.socket), as dockerd's -H fd://:
			// systemd listens, and starts vmctld on the first client.
			ls, err := activation.Listeners()
			if err != nil || len(ls) == 0 {
				closeAll()
				return fmt.Errorf("-H fd://: no sockets passed by systemd (start vmctld through vmctld.socket, or give -H unix:///path)")
			}
			for _, l := range ls {
				listeners = append(listeners, l)
				names = append(names, "fd://"+l.Addr().String())
			}
			continue
		}
		parsed, err := server.ParseHost(h)
		if err != nil {
			closeAll()
			return err
		}
		l, err := server.Listen(parsed, listenOpts)
		if err != nil {
			closeAll()
			return err
		}
		if parsed.Network == "tcp" && listenOpts.TLS == nil {
			log.Printf("vmctld: WARNING: the API on %s has no TLS: anyone who can reach it on this machine can run containers as root", h)
		} else if parsed.Network == "tcp" && !*tlsVerify {
			log.Printf("vmctld: WARNING: the API on %s takes any client (--tls without --tlsverify)", h)
		}
		listeners = append(listeners, l)
		names = append(names, h)
	}
	eng, err := engine.New(cfg)
	if err != nil {
		closeAll()
		return err
	}
	// Containers left running by an earlier vmctld, and their networking,
	// are taken over before the API answers, so no client sees them as
	// exited meanwhile.
	adopted, err := eng.Restore(context.Background())
	if err != nil {
		closeAll()
		return err
	}
	if restarted, err := eng.RestartOnBoot(); err != nil {
		log.Printf("vmctld: restart policies: %v", err)
	} else if len(restarted) > 0 {
		log.Printf("vmctld: starting %d container(s) by their restart policy", len(restarted))
	}
	if len(adopted) > 0 {
		log.Printf("vmctld: re-adopted %d running container(s)", len(adopted))
	}
	// Not fatal: a directory that cannot be removed now can be next time.
	if swept, err := eng.SweepOrphans(); err != nil {
		log.Printf("vmctld: sweeping container directories without a record: %v", err)
	} else if len(swept) > 0 {
		log.Printf("vmctld: removed %d container director(ies) without a record, left by a crash", len(swept))
	}
	api := server.New(eng.Services())
	if *debug {
		api.LogRequest = func(method, path string, status int, took time.Duration) {
			log.Printf("vmctld: %s %s %d %s", method, path, status, took.Round(time.Microsecond))
		}
	}
	srv := &http.Server{Handler: api, ReadHeaderTimeout: 30 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, len(listeners))
	var wg sync.WaitGroup
	for i, l := range listeners {
		log.Printf("vmctld %s: API %s on %s", engine.Version, server.APIVersion, names[i])
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	// Under systemd (Type=notify), the unit is up once the API answers.
	daemon.SdNotify(false, daemon.SdNotifyReady)
	select {
	case <-ctx.Done():
		log.Printf("vmctld: shutting down")
	case err := <-errc:
		srv.Close()
		api.Close()
		return err
	}
	// Graceful: stop accepting, let plain requests finish, end streams.
	// Running VMs are left alone (DetachVMs): the next vmctld on the same
	// roots re-adopts them (Containers.Readopt).
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	api.Close()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close() // waits and log follows that did not end in time
	}
	wg.Wait()
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	for _, h := range hosts {
		if h == "fd://" {
			continue // systemd's socket, not ours to remove
		}
		if p, perr := server.ParseHost(h); perr == nil && p.Network == "unix" {
			os.Remove(p.Address)
		}
	}
	return nil
}
