// Command vmctl-agent is the guest's /init: it prepares the guest as PID 1
// and serves the agent API (api/agent/v1) to the host over vsock and/or a
// virtio-serial port. Run with the hidden container-init argument, it is a
// container's init instead (see guest-agent/container).
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	clog "github.com/containerd/log"

	"github.com/vmctl/vmctl/api/agent/contract"
	"github.com/vmctl/vmctl/guest-agent/container"
	"github.com/vmctl/vmctl/guest-agent/pid1"
	"github.com/vmctl/vmctl/guest-agent/reaper"
	"github.com/vmctl/vmctl/guest-agent/service"
	"github.com/vmctl/vmctl/guest-agent/storage"
	"github.com/vmctl/vmctl/guest-agent/trace"
	"github.com/vmctl/vmctl/guest-agent/transport"
)

// portWait bounds the wait for the virtio-serial port's name to appear: the
// driver learns port names from the host after probing.
const portWait = 5 * time.Second

func main() {
	if len(os.Args) > 1 && os.Args[1] == container.InitArg {
		container.InitMain()
	}
	if os.Getpid() != 1 {
		// It mounts over /dev and /proc and reboots the machine: never
		// anywhere but in a guest.
		fmt.Fprintln(os.Stderr, "vmctl-agent: must run as the guest's init (PID 1); it is not a host command")
		os.Exit(2)
	}
	serve()
	// PID 1 must never exit: that is a kernel panic. serve only returns
	// when the agent cannot work; end the VM with a reason in the log.
	pid1.Logf("no transport left to serve; rebooting")
	if err := pid1.Reboot(); err != nil {
		pid1.Logf("%v", err)
	}
	select {}
}

func serve() {
	started := trace.Now()
	logw := pid1.OpenLog()
	clog.L.Logger.SetOutput(logw)
	// Quiet on success: the library's info messages are not errors.
	clog.L.Logger.SetLevel(clog.ErrorLevel)
	if err := pid1.Setup(); err != nil {
		pid1.Logf("setup: %v", err)
	}
	if pid1.Selftest() {
		return
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	if pid1.HasKernelFlag(string(cmdline), contract.TraceFlag) {
		trace.Enable(true)
		trace.Add(trace.Mark{Name: "agent: main", At: started})
		trace.Step("agent: boot mounts and cgroups")
	}

	r := reaper.New()
	go r.Run()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGCHLD)
	go func() {
		for range sigs {
			r.Poll()
		}
	}()

	rt, err := container.New(container.Config{Reaper: r})
	if err != nil {
		pid1.Logf("%v", err)
		return
	}
	st := &storage.Manager{WaitDevice: 2 * time.Second}

	var wg sync.WaitGroup
	serveOn := func(name string, l net.Listener) {
		svc := service.New(service.Config{
			Runtime: rt, Storage: st, Transport: name, Logf: pid1.Logf,
			PowerOff: func() {
				if err := pid1.Reboot(); err != nil {
					pid1.Logf("%v", err)
				}
			},
		})
		srv, err := service.NewServer(svc)
		if err != nil {
			pid1.Logf("%v", err)
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(context.Background(), l); err != nil {
				pid1.Logf("serve %s: %v", name, err)
			}
		}()
	}

	// vsock first: it is ready at once, while a serial port's name may
	// still be on its way from the host.
	vsockOK := false
	if transport.HasVsock() {
		if l, err := transport.ListenVsock(contract.VsockPort); err == nil {
			serveOn(contract.TransportVsock, l)
			vsockOK = true
		} else {
			pid1.Logf("%v", err)
		}
	}
	if path, err := findPort(portWait); err == nil {
		trace.Step("agent: serial port found")
		serveOn(contract.TransportSerial, transport.ListenSerial(path))
	} else if !vsockOK {
		pid1.Logf("%v", err)
	}
	wg.Wait()
}

// findPort waits for the agent's virtio-serial port to be named.
func findPort(wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		path, err := transport.FindSerialPort("/sys/class/virtio-ports", "/dev", contract.SerialPortName)
		if err == nil || time.Now().After(deadline) {
			return path, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
