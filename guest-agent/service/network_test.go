package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"

	agent "github.com/vmctl/vmctl/api/agent/v1"
	"github.com/vmctl/vmctl/guest-agent/internal/testenv"
	"github.com/vmctl/vmctl/guest-agent/netconf"
)

func TestConfigureNetwork(t *testing.T) {
	valid := &agent.ConfigureNetworkRequest{
		Interfaces: []*agent.NetworkInterface{{Mac: "02:42:ac:1e:00:02", Name: "eth0", Addresses: []string{"172.30.0.2/16"}, Mtu: 1400}},
		Routes:     []*agent.NetworkRoute{{Gateway: "172.30.0.1"}, {Destination: "10.9.0.0/16", Device: "eth0"}},
	}
	tests := []struct {
		name       string
		req        *agent.ConfigureNetworkRequest
		configErr  error
		want       codes.Code
		wantCalled bool
	}{
		{name: "valid", req: valid, want: codes.OK, wantCalled: true},
		{name: "empty", req: &agent.ConfigureNetworkRequest{}, want: codes.OK, wantCalled: true},
		{name: "malformed address", req: &agent.ConfigureNetworkRequest{Interfaces: []*agent.NetworkInterface{
			{Mac: "02:42:ac:1e:00:02", Name: "eth0", Addresses: []string{"172.30.0.2"}}}}, want: codes.InvalidArgument},
		{name: "gateway unreachable", req: &agent.ConfigureNetworkRequest{
			Interfaces: valid.Interfaces, Routes: []*agent.NetworkRoute{{Gateway: "10.0.0.1"}}}, want: codes.InvalidArgument},
		{name: "absent MAC (found out when applying)", req: valid,
			configErr: fmt.Errorf("%w: no interface has MAC address 02:42:ac:1e:00:02", netconf.ErrInvalid),
			want:      codes.InvalidArgument, wantCalled: true},
		{name: "kernel failure", req: valid, configErr: errors.New("rtnetlink socket: out of memory"),
			want: codes.Internal, wantCalled: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestService(t, t.TempDir(), t.TempDir())
			var got []netconf.Request
			s.cfg.ConfigureNetwork = func(r netconf.Request) error {
				got = append(got, r)
				return tt.configErr
			}
			_, err := s.ConfigureNetwork(context.Background(), tt.req)
			if code(err) != tt.want {
				t.Errorf("ConfigureNetwork = %v, want %v", err, tt.want)
			}
			if (len(got) == 1) != tt.wantCalled || len(got) > 1 {
				t.Fatalf("configured %d times, want called %v", len(got), tt.wantCalled)
			}
		})
	}
	s := newTestService(t, t.TempDir(), t.TempDir())
	var got netconf.Request
	s.cfg.ConfigureNetwork = func(r netconf.Request) error { got = r; return nil }
	if _, err := s.ConfigureNetwork(context.Background(), valid); err != nil {
		t.Fatal(err)
	}
	want := netconf.Request{
		Interfaces: []netconf.Interface{{MAC: "02:42:ac:1e:00:02", Name: "eth0", Addresses: []string{"172.30.0.2/16"}, MTU: 1400}},
		Routes:     []netconf.Route{{Gateway: "172.30.0.1"}, {Destination: "10.9.0.0/16", Device: "eth0"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("request passed on = %+v, want %+v", got, want)
	}
}

// TestContainerEtcAndNetwork runs containers with the host's /etc files,
// one in the guest's network namespace and one in its own, on an image
// whose /etc/resolv.conf is an absolute symlink that leads nowhere and
// which has no /etc/hosts or /etc/hostname.
func TestContainerEtcAndNetwork(t *testing.T) {
	testenv.RequireRoot(t)
	const escape = "/vmctl-etcfiles-escape"
	if _, err := os.Stat(escape); err == nil {
		t.Fatalf("%s exists before the test", escape)
	}
	root := testenv.BusyboxRoot(t, "")
	if err := os.Symlink(escape+"/resolv.conf", filepath.Join(root, "etc/resolv.conf")); err != nil {
		t.Fatal(err)
	}
	image := testenv.Loop(t, testenv.Ext4Image(t, root, "16M"))
	writable := testenv.Loop(t, testenv.Ext4Image(t, "", "16M"))
	sys := testenv.FakeSysBlock(t, map[string]string{
		strings.TrimPrefix(image, "/dev/"): "img", strings.TrimPrefix(writable, "/dev/"): "rw",
	})
	s := newTestService(t, sys, testenv.CgroupRoot(t))
	srv, err := NewServer(s)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	dir, err := os.MkdirTemp("", "svc")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("unix", filepath.Join(dir, "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	conn, err := net.Dial("unix", filepath.Join(dir, "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	client := ttrpc.NewClient(conn)
	defer client.Close()
	c := agent.NewTTRPCAgentClient(client)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	defer s.Shutdown(context.Background(), &agent.ShutdownRequest{})

	guestNet, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	hosts := "127.0.0.1\tlocalhost\n172.30.0.2\tweb\n"
	resolv := "nameserver 172.30.0.1\noptions ndots:0\n"
	run := func(id string, share bool) string {
		t.Helper()
		spec, _ := json.Marshal(specs.Spec{
			Version: specs.Version,
			Process: &specs.Process{Args: []string{"sh", "-c", "cat /etc/hosts /etc/resolv.conf /etc/hostname; readlink /proc/self/ns/net"},
				Env: []string{"PATH=/bin"}, Cwd: "/"},
			Mounts: []specs.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}},
			Linux: &specs.Linux{Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace}, {Type: specs.MountNamespace}, {Type: specs.NetworkNamespace},
			}},
		})
		if _, err := c.CreateContainer(ctx, &agent.CreateContainerRequest{ContainerId: id, OciSpec: spec, Storages: disks,
			Hosts: hosts, ResolvConf: resolv, HostnameFile: "web\n", ShareGuestNetwork: share}); err != nil {
			t.Fatalf("CreateContainer %s: %v", id, err)
		}
		if _, err := c.StartContainer(ctx, &agent.ContainerRequest{ContainerId: id}); err != nil {
			t.Fatalf("StartContainer %s: %v", id, err)
		}
		var out []byte
		for {
			resp, err := c.ReadStdout(ctx, &agent.ReadOutputRequest{ContainerId: id, MaxLen: 4096, Offset: uint64(len(out))})
			if err != nil {
				t.Fatalf("read %s: %v", id, err)
			}
			out = append(out, resp.Data...)
			if resp.Eof {
				break
			}
		}
		if _, err := c.RemoveContainer(ctx, &agent.ContainerRequest{ContainerId: id}); err != nil {
			t.Fatalf("RemoveContainer %s: %v", id, err)
		}
		if _, err := os.Stat(filepath.Join(s.cfg.Etc.Base, id)); !os.IsNotExist(err) {
			t.Errorf("the /etc files of %s outlive it: %v", id, err)
		}
		return string(out)
	}
	files := hosts + resolv + "web\n"
	if out := run("shared", true); out != files+guestNet+"\n" {
		t.Errorf("container sharing the guest's network printed %q, want %q", out, files+guestNet+"\n")
	}
	out := run("own", false)
	if !strings.HasPrefix(out, files) || strings.Contains(out, guestNet) {
		t.Errorf("container with its own network namespace printed %q, want the files and another namespace than %s", out, guestNet)
	}
	if _, err := os.Stat(escape); err == nil {
		os.RemoveAll(escape)
		t.Errorf("the bind over the image's /etc/resolv.conf symlink followed it out of the rootfs to %s", escape)
	}
}
