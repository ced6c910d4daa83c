package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Kubernetes' CRI through containerd's cri plugin, with the shim as the
// runtime handler "vmctl": a pod is one VM, its containers run in it.

var (
	criOnce   sync.Once
	criShared *ctrd
	criErr    error
)

// criContainerd is a containerd of the tests' own with its cri plugin on,
// vmctl as the default runtime handler and the busybox image as the pod
// sandbox image.
func criContainerd(t *testing.T) *ctrd {
	t.Helper()
	containerd(t) // the checks, and the shared image import's reference
	criOnce.Do(func() { criShared, criErr = startCRIContainerd(e2e(t)) })
	if criErr != nil {
		t.Fatal(criErr)
	}
	return criShared
}

func startCRIContainerd(e *env) (*ctrd, error) {
	dir, err := os.MkdirTemp("", "cri")
	if err != nil {
		return nil, err
	}
	tempDirs = append(tempDirs, dir)
	c := &ctrd{dir: dir, sock: filepath.Join(dir, "c.sock"), shimState: filepath.Join(dir, "shim"), log: &bytes.Buffer{}}
	c.env = append(os.Environ(), "PATH="+filepath.Join(e.root, "bin")+":"+os.Getenv("PATH"),
		"VMCTL_SHIM_STATE="+c.shimState, "VMCTL_KERNEL=", "VMCTL_INITRD=", "VMCTL_HYPERVISOR=")
	// The sandbox image must be there before the cri plugin is asked for a
	// pod: import it with a containerd that has no cri plugin yet.
	write := func(cri string) error {
		return os.WriteFile(filepath.Join(dir, "config.toml"), []byte(fmt.Sprintf(`version = 2
root = %q
state = %q
%s
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), cri, c.sock, c.sock+".ttrpc")), 0o644)
	}
	if err := write(`disabled_plugins = ["io.containerd.grpc.v1.cri"]`); err != nil {
		return nil, err
	}
	if err := c.start(); err != nil {
		return nil, err
	}
	out, err := c.ctr(context.Background(), nil, "-n", "k8s.io", "images", "import", filepath.Join(e.root, "build/busybox.tar"))
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("ctr images import: %v: %s", err, out)
	}
	list, err := c.ctr(context.Background(), nil, "-n", "k8s.io", "images", "ls", "-q")
	if err != nil || strings.TrimSpace(list) == "" {
		c.stop()
		return nil, fmt.Errorf("ctr images ls: %v: %q", err, list)
	}
	c.image = strings.Fields(list)[0]
	c.stop()
	// CNI: Debian's bridge plugin with host-local addresses, on a bridge
	// in the tests' own network namespace.
	if err := os.MkdirAll(filepath.Join(dir, "cni"), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "cni", "10-vmctl-test.conflist"), []byte(fmt.Sprintf(`{
  "cniVersion": "0.4.0",
  "name": "vmctl-test",
  "plugins": [{
    "type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}],
             "dataDir": %q}
  }]
}`, criBridge, criSubnet, filepath.Join(dir, "cni-ipam"))), 0o644); err != nil {
		return nil, err
	}
	if err := write(fmt.Sprintf(`[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "vmctl"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.vmctl]
      runtime_type = %q
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, c.image, shimRuntime, filepath.Join(dir, "cni"))); err != nil {
		return nil, err
	}
	if err := c.start(); err != nil {
		return nil, err
	}
	atExit = append(atExit, c.stop)
	return c, nil
}

// criClient is a CRI runtime client of the tests' cri containerd, and a
// context bounding the test's calls; both end with the test.
func (c *ctrd) criClient(t *testing.T) (runtimeapi.RuntimeServiceClient, context.Context) {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+c.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return runtimeapi.NewRuntimeServiceClient(conn), ctx
}

// waitExited waits until a CRI container has exited, for up to a minute,
// and returns its status.
func waitExited(t *testing.T, ctx context.Context, rt runtimeapi.RuntimeServiceClient, id string) *runtimeapi.ContainerStatus {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		r, err := rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.State == runtimeapi.ContainerState_CONTAINER_EXITED || time.Now().After(deadline) {
			return r.Status
		}
	}
}

// The CNI network the CRI tests' pods get.
const (
	criBridge = "vmctlcri0"
	criSubnet = "10.88.7.0/24"
)

// A pod on CNI's network: its VM takes the pod's address, the host reaches
// a server in it at that address, and a container of the pod reaches it
// too.
func TestShimCRIPodNetwork(t *testing.T) {
	c := criContainerd(t)
	rt, ctx := c.criClient(t)
	logs := t.TempDir()
	podCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "net", Namespace: "default", Uid: "pod-net-1"},
		Hostname:     "net",
		LogDirectory: logs,
	}
	run, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg, RuntimeHandler: "vmctl"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\ncontainerd: %s", err, c.log)
	}
	podID := run.PodSandboxId
	defer func() {
		if _, err := rt.StopPodSandbox(context.Background(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
			t.Errorf("StopPodSandbox: %v", err)
		}
		if _, err := rt.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
			t.Errorf("RemovePodSandbox: %v", err)
		}
		c.checkClean(t)
		// CNI's DEL ran and the pod's namespace (with the VM's tap) is
		// gone: its veth left the bridge.
		if out, _ := exec.Command("ip", "-o", "link", "show", "master", criBridge).Output(); len(out) > 0 {
			t.Errorf("ports left on %s: %s", criBridge, out)
		}
	}()
	status, err := rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podID})
	if err != nil {
		t.Fatal(err)
	}
	podIP := status.GetStatus().GetNetwork().GetIp()
	if !strings.HasPrefix(podIP, "10.88.7.") {
		t.Fatalf("pod IP %q, want one of %s", podIP, criSubnet)
	}
	r, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: podID, SandboxConfig: podCfg,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "server"},
			Image:    &runtimeapi.ImageSpec{Image: c.image},
			Command:  []string{"sh", "-c", "mkdir -p /www && ip -4 -o addr show eth0 > /www/index.html && exec httpd -f -p 8080 -h /www"},
			LogPath:  "server.log",
		},
	})
	if err != nil {
		t.Fatalf("CreateContainer: %v\ncontainerd: %s", err, c.log)
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: r.ContainerId}); err != nil {
		t.Fatalf("StartContainer: %v\ncontainerd: %s", err, c.log)
	}
	// From the host's side of CNI's bridge.
	var page string
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		out, err := httpGet("http://" + podIP + ":8080/")
		if err == nil {
			page = out
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(logs, "server.log"))
			t.Fatalf("GET http://%s:8080/ from the host: %v; server log %q", podIP, err, log)
		}
	}
	if !strings.Contains(page, " "+podIP+"/24 ") {
		t.Errorf("the guest's eth0 is %q: want the pod's address %s/24", page, podIP)
	}
	ex, err := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: r.ContainerId, Cmd: []string{"wget", "-q", "-O", "-", "http://" + podIP + ":8080/"}, Timeout: 30})
	if err != nil || ex.ExitCode != 0 || string(ex.Stdout) != page {
		t.Errorf("the pod's own address from inside: %v, exit %d, stdout %q, stderr %q", err, ex.GetExitCode(), ex.GetStdout(), ex.GetStderr())
	}
	if _, err := rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: r.ContainerId, Timeout: 5}); err != nil {
		t.Errorf("StopContainer: %v", err)
	}
	if _, err := rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: r.ContainerId}); err != nil {
		t.Errorf("RemoveContainer: %v", err)
	}
}

// A pod of two containers in one VM: one serves HTTP, the other fetches
// it through localhost; ExecSync, the CRI log, and nothing left after the
// pod is removed.
func TestShimCRIPod(t *testing.T) {
	e := e2e(t)
	c := criContainerd(t)
	rt, ctx := c.criClient(t)

	logs := t.TempDir()
	podCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "pod-web-1"},
		Hostname:     "web",
		LogDirectory: logs,
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE},
		}},
	}
	run, err := rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: podCfg, RuntimeHandler: "vmctl"})
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\ncontainerd: %s", err, c.log)
	}
	podID := run.PodSandboxId
	removed := false
	defer func() {
		if !removed {
			rt.StopPodSandbox(context.Background(), &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID})
			rt.RemovePodSandbox(context.Background(), &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID})
		}
	}()

	create := func(name string, cmd ...string) string {
		t.Helper()
		r, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
			PodSandboxId: podID, SandboxConfig: podCfg,
			Config: &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: name},
				Image:    &runtimeapi.ImageSpec{Image: c.image},
				Command:  cmd,
				LogPath:  name + ".log",
			},
		})
		if err != nil {
			t.Fatalf("CreateContainer %s: %v\ncontainerd: %s", name, err, c.log)
		}
		if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: r.ContainerId}); err != nil {
			t.Fatalf("StartContainer %s: %v\ncontainerd: %s", name, err, c.log)
		}
		return r.ContainerId
	}
	server := create("server", "sh", "-c", "mkdir -p /www && echo hello-from-the-pod > /www/index.html && exec httpd -f -p 8080 -h /www")
	client := create("client", "sh", "-c",
		"for i in $(seq 1 100); do wget -q -O - http://127.0.0.1:8080/ && uname -r && exit 0; sleep 0.2; done; exit 1")

	// The client ends once it fetched the page.
	st := waitExited(t, ctx, rt, client)
	log, _ := os.ReadFile(filepath.Join(logs, "client.log"))
	if st.State != runtimeapi.ContainerState_CONTAINER_EXITED || st.ExitCode != 0 {
		t.Fatalf("client: state %v, exit %d; its log:\n%s", st.State, st.ExitCode, log)
	}
	// The CRI log: "<time> stdout F <line>" per line.
	if !strings.Contains(string(log), " stdout F hello-from-the-pod\n") || !strings.Contains(string(log), " stdout F "+e.release+"\n") {
		t.Errorf("client's CRI log %q: want the page and the guest kernel's release", log)
	}

	// Kubernetes volumes: host directories bound into a container of the
	// pod after its VM booted, read-write and read-only.
	data, conf := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(conf, "motd"), []byte("from-the-host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	vr, err := rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: podID, SandboxConfig: podCfg,
		Config: &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "volumes"},
			Image:    &runtimeapi.ImageSpec{Image: c.image},
			Command:  []string{"sh", "-c", "cat /conf/motd && echo from-the-pod > /data/out && if echo x > /conf/denied; then echo rw; else echo ro-refused; fi"},
			LogPath:  "volumes.log",
			Mounts: []*runtimeapi.Mount{
				{ContainerPath: "/data", HostPath: data},
				{ContainerPath: "/conf", HostPath: conf, Readonly: true},
			},
		},
	})
	if err != nil {
		t.Fatalf("CreateContainer with volumes: %v", err)
	}
	if _, err := rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: vr.ContainerId}); err != nil {
		t.Fatalf("StartContainer with volumes: %v", err)
	}
	waitExited(t, ctx, rt, vr.ContainerId)
	vlog, _ := os.ReadFile(filepath.Join(logs, "volumes.log"))
	if !strings.Contains(string(vlog), " stdout F from-the-host\n") || !strings.Contains(string(vlog), " stdout F ro-refused\n") {
		t.Errorf("volumes container's log %q: want the host's file and the read-only volume's refusal", vlog)
	}
	if b, err := os.ReadFile(filepath.Join(data, "out")); err != nil || string(b) != "from-the-pod\n" {
		t.Errorf("the pod's write on the host: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(conf, "denied")); err == nil {
		t.Error("a read-only volume let the pod write to the host")
	}
	if _, err := rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: vr.ContainerId}); err != nil {
		t.Errorf("RemoveContainer: %v", err)
	}

	// One VM holds the pod, and one shim serves it.
	vms, shims := 0, 0
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		switch cmdline := string(b); {
		case strings.Contains(cmdline, c.shimState+"/") && !strings.Contains(cmdline, "virtiofsd"):
			vms++
		case strings.Contains(cmdline, "containerd-shim-vmctl-v1") && strings.Contains(cmdline, c.sock):
			shims++
		}
	}
	if vms != 1 || shims != 1 {
		t.Errorf("the pod runs in %d VMs served by %d shims, want 1 and 1", vms, shims)
	}

	ex, err := rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: server, Cmd: []string{"cat", "/www/index.html"}, Timeout: 30})
	if err != nil || ex.ExitCode != 0 || string(ex.Stdout) != "hello-from-the-pod\n" {
		t.Errorf("ExecSync: %v, exit %d, stdout %q, stderr %q", err, ex.GetExitCode(), ex.GetStdout(), ex.GetStderr())
	}
	ex, err = rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: server, Cmd: []string{"sh", "-c", "exit 3"}, Timeout: 30})
	if err != nil || ex.ExitCode != 3 {
		t.Errorf("ExecSync exit 3: %v, exit %d", err, ex.GetExitCode())
	}

	for _, id := range []string{server, client} {
		if _, err := rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 5}); err != nil {
			t.Errorf("StopContainer: %v", err)
		}
		if _, err := rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Errorf("RemoveContainer: %v", err)
		}
	}
	if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Errorf("StopPodSandbox: %v", err)
	}
	if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podID}); err != nil {
		t.Errorf("RemovePodSandbox: %v", err)
	}
	removed = true
	c.checkClean(t)
	if out, _ := exec.Command("pgrep", "-f", "containerd-shim-vmctl-v1.*"+c.sock).Output(); len(out) > 0 {
		t.Errorf("shims left: %s", out)
	}
}

// httpGet fetches url with a short timeout.
func httpGet(url string) (string, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(b), nil
}
