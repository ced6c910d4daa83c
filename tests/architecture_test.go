package tests

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/vmctl/vmctl"

type goPackage struct {
	ImportPath string
	Imports    []string
}

// listPackages returns every package of the module with its direct imports.
func listPackages(t *testing.T) []goPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json", "./...")
	cmd.Dir = repoRoot(t)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p goPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) < 5 {
		t.Fatalf("go list found only %d packages", len(pkgs))
	}
	return pkgs
}

func repoRoot(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Dir(wd)
}

func rel(importPath string) string {
	return strings.TrimPrefix(strings.TrimPrefix(importPath, module), "/")
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// guestAgentModules is the guest agent's own small dependency set: it runs
// as PID 1 of every guest, so every module it links is attack surface and
// boot time.
var guestAgentModules = []string{
	"github.com/containerd/ttrpc",
	"github.com/containerd/log",
	"google.golang.org/protobuf",
	"google.golang.org/grpc/codes",
	"google.golang.org/grpc/status",
	"google.golang.org/genproto/googleapis/rpc",
	"golang.org/x/sys",
	"github.com/mdlayher/vsock",
	"github.com/creack/pty",
	"github.com/opencontainers/runtime-spec",
}

// TestDependencyRules checks the dependency rules of the architecture:
// contracts depend on nothing, the VMM library knows no containers, the
// engine never links a VMM or the guest, the guest agent stays small, and
// nothing imports a command.
func TestDependencyRules(t *testing.T) {
	if _, err := os.Stat(filepath.Join(repoRoot(t), "pkg")); err == nil {
		t.Errorf("a pkg/ directory exists: shared leaves go in internal/<name>")
	}
	for _, p := range listPackages(t) {
		from := rel(p.ImportPath)
		for _, imp := range p.Imports {
			internalImp := strings.HasPrefix(imp, module+"/")
			to := rel(imp)
			fail := func(rule string) { t.Errorf("%s imports %s: %s", from, imp, rule) }
			switch {
			case under(from, "api"):
				if internalImp && !under(to, from) {
					fail("api/ imports no repository package")
				}
			case under(from, "hypervisor"):
				if internalImp && (under(to, "engine") || under(to, "guest-agent") || under(to, "cmd")) {
					fail("hypervisor/ knows nothing of the engine, the guest or commands")
				}
				if internalImp && under(to, "api") && !under(from, "hypervisor/control") {
					fail("only hypervisor/control imports api/")
				}
			case under(from, "guest-agent"):
				if internalImp && !under(to, "guest-agent") && !under(to, "api/agent") {
					fail("guest-agent/ imports only api/agent and itself")
				}
				if !internalImp && strings.Contains(strings.Split(imp, "/")[0], ".") && !allowed(imp, guestAgentModules) {
					fail("not in the guest agent's dependency set (tests/architecture_test.go)")
				}
			case under(from, "engine"):
				if internalImp && (under(to, "hypervisor") || under(to, "guest-agent")) {
					fail("engine/ never imports hypervisor/ or guest-agent/: it drives VMMs as processes")
				}
				if isEngineDomain(from) && (internalImp && (under(to, "api") || under(to, "engine/server") || under(to, "engine/services")) ||
					imp == "github.com/containerd/ttrpc" || under(imp, dockerWireTypes)) {
					fail("engine domain packages import no transport code")
				}
				if under(from, "engine/server") && internalImp && (to == "engine" || isEngineStore(to)) {
					fail("engine/server depends on the engine's services, never on its wiring or a store")
				}
				if under(from, "engine/services") && internalImp && (to == "engine" || under(to, "engine/server")) {
					fail("the engine's services know neither its wiring nor the REST server")
				}
			}
			if internalImp && under(to, "cmd") {
				fail("nothing imports cmd/")
			}
		}
	}
}

// isEngineDomain: engine packages other than the adapters (agent client,
// sandbox drivers, services, server) and the wiring package. Sandbox
// drivers talk to VMM processes over their control APIs, as the agent
// client talks to the guest.
func isEngineDomain(p string) bool {
	if p == "engine" || strings.HasPrefix(p, "engine/sandbox/") {
		return false
	}
	for _, adapter := range []string{"engine/agent", "engine/services", "engine/server"} {
		if under(p, adapter) {
			return false
		}
	}
	return under(p, "engine")
}

// dockerWireTypes are the Docker Engine API's wire types, which only the
// REST server converts to and from.
const dockerWireTypes = "github.com/moby/moby/api"

// isEngineStore: the packages that keep the engine's state (images, image
// disks, containers, volumes), which only the services and the wiring use.
func isEngineStore(p string) bool {
	for _, store := range []string{"engine/images", "engine/rootfs", "engine/containers", "engine/volumes"} {
		if under(p, store) {
			return true
		}
	}
	return false
}

func allowed(imp string, mods []string) bool {
	for _, m := range mods {
		if under(imp, m) {
			return true
		}
	}
	return false
}

// TestRuleCheckerCatchesViolations guards the checker itself.
func TestRuleCheckerCatchesViolations(t *testing.T) {
	if !isEngineDomain("engine/images") || isEngineDomain("engine/agent") || isEngineDomain("engine") || isEngineDomain("engine/services/containersvc") ||
		isEngineDomain("engine/sandbox/vmm") || !isEngineDomain("engine/sandbox") {
		t.Errorf("isEngineDomain misclassifies packages")
	}
	if !isEngineStore("engine/images") || !isEngineStore("engine/volumes") || !isEngineStore("engine/containers") || !isEngineStore("engine/rootfs") ||
		isEngineStore("engine/services/imagesvc") || isEngineStore("engine/events") || isEngineStore("engine") {
		t.Errorf("isEngineStore misclassifies packages")
	}
	if !allowed("golang.org/x/sys/unix", guestAgentModules) || allowed("github.com/spf13/cobra", guestAgentModules) {
		t.Errorf("allowed() misclassifies modules")
	}
}

// TestCLIIsAnAPIClient checks that vmctl reaches the engine only through
// the Docker Engine API: of the engine it imports only what serves that
// API in-process (the engine's wiring and its REST server), never a
// service, store or driver whose calls would be a second path.
func TestCLIIsAnAPIClient(t *testing.T) {
	allowed := map[string]bool{"engine": true, "engine/server": true}
	for _, p := range listPackages(t) {
		if rel(p.ImportPath) != "cmd/vmctl" {
			continue
		}
		for _, imp := range p.Imports {
			to := rel(imp)
			if strings.HasPrefix(imp, module+"/") && under(to, "engine") && !allowed[to] {
				t.Errorf("cmd/vmctl imports %s: the CLI talks to the engine only through its API (engine/server in-process)", imp)
			}
		}
		return
	}
	t.Fatal("cmd/vmctl not found in go list")
}
