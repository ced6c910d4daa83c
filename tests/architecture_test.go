package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vmctl/vmctl/api/agent/contract"
)

const module = "github.com/vmctl/vmctl"

type goPackage struct {
	ImportPath string
	Imports    []string
	// TestImports and XTestImports are the imports of the package's tests.
	TestImports, XTestImports []string
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
	// Seccomp filters: compiled to BPF in pure Go.
	"github.com/elastic/go-seccomp-bpf",
	"golang.org/x/net/bpf",
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
				if internalImp && under(to, agentAPI) && !under(from, "engine/agent") {
					fail("only engine/agent speaks the agent API: use its typed client")
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
		// The engine's tests, too, drive the agent through engine/agent.
		if under(from, "engine") && !under(from, "engine/agent") {
			for _, imp := range append(p.TestImports, p.XTestImports...) {
				if under(rel(imp), agentAPI) && strings.HasPrefix(imp, module+"/") {
					t.Errorf("%s tests import %s: only engine/agent speaks the agent API: use its typed client", from, imp)
				}
			}
		}
	}
}

// agentAPI is the generated agent API: the guest serves it, and on the
// host only the agent client (engine/agent) speaks it.
const agentAPI = "api/agent/v1"

// isEngineDomain: engine packages other than the adapters (agent client,
// sandbox drivers, services, the REST server, the containerd shim's task
// service) and the wiring package. Sandbox drivers talk to VMM processes
// over their control APIs, as the agent client talks to the guest.
func isEngineDomain(p string) bool {
	if p == "engine" || strings.HasPrefix(p, "engine/sandbox/") {
		return false
	}
	for _, adapter := range []string{"engine/agent", "engine/services", "engine/server", "engine/shim"} {
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
// disks, containers, volumes, networks), which only the services and the
// wiring use.
func isEngineStore(p string) bool {
	for _, store := range []string{"engine/images", "engine/rootfs", "engine/containers", "engine/volumes", "engine/networks"} {
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
	if !isEngineStore("engine/images") || !isEngineStore("engine/volumes") || !isEngineStore("engine/containers") || !isEngineStore("engine/rootfs") || !isEngineStore("engine/networks") ||
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

// contractDir is the package that holds the guest contract's values.
const contractDir = "api/agent/contract"

// contractValues are the guest contract's constants, read from the
// contract package's source, so that a constant added there is checked
// without touching this test.
type contractValues struct {
	// names are the namespaced strings (they contain "vmctl"): disk
	// serials, the serial port's name, kernel flags. They are distinctive,
	// so they are looked for everywhere, also inside longer literals
	// ("serial=vmctl-rw,ro").
	names map[string]string // value -> constant name
	// prefixes are the names that start a longer value (a volume serial
	// is the prefix and an index).
	prefixes map[string]bool
	// words are the other strings (storage roles, transports): everyday
	// words ("image", "volume"), flagged only where they are used as a
	// role or transport.
	words map[string]string
	// ports are the integer constants whose name says they are a port.
	ports map[string]string // decimal value -> constant name
}

func readContract(t *testing.T) contractValues {
	t.Helper()
	v := contractValues{names: map[string]string{}, prefixes: map[string]bool{}, words: map[string]string{}, ports: map[string]string{}}
	dir := filepath.Join(repoRoot(t), contractDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok {
						continue
					}
					switch lit.Kind {
					case token.STRING:
						s, err := strconv.Unquote(lit.Value)
						if err != nil {
							t.Fatal(err)
						}
						switch {
						case strings.Contains(s, "vmctl"):
							v.names[s] = name.Name
							if strings.HasSuffix(name.Name, "Prefix") {
								v.prefixes[s] = true
							}
						default:
							v.words[s] = name.Name
						}
					case token.INT:
						if strings.Contains(strings.ToLower(name.Name), "port") {
							v.ports[lit.Value] = name.Name
						}
					}
				}
			}
		}
	}
	return v
}

// TestGuestContractInOnePlace checks that the values host and guest agree
// on (api/agent/contract) are written nowhere else in non-test Go code:
// one side changing its copy would leave the other waiting for a disk or
// a port that never comes. Every .go file of the repository counts,
// testdata programs and scripts too, generated code too. Test files may
// spell a value out where they test the contract itself.
//
// Literals are matched without type information, so each kind is scoped
// to where a match means a copy of the contract:
//   - namespaced names (they contain "vmctl") anywhere in a string literal,
//     as a whole token (not followed or preceded by a letter, digit, '.',
//     '-' or '_', so the protobuf package "vmctl.agent.v1" is no copy of
//     the port name "vmctl.agent"); a prefix may be followed by anything
//     but a letter ("vmctl-vol%d" is a copy, "vmctl-volumes" is not);
//   - roles and transports, everyday words, only as a literal given to a
//     field, variable or comparison whose name says role or transport;
//   - the port, a common number, only as a literal in a port's place: the
//     value of a constant, variable or field whose name says port, an
//     argument of a call whose function says port, vsock, dial, listen or
//     connect, or of a call that names a port in a string argument (a
//     flag definition).
func TestGuestContractInOnePlace(t *testing.T) {
	v := readContract(t)
	// The reader must find what it looks for, or the test below is empty.
	if v.names[contract.SerialPortName] == "" || v.names[contract.WritableDiskSerial] == "" ||
		!v.prefixes[contract.VolumeDiskSerialPrefix] || v.words[contract.RoleImage] == "" ||
		v.words[contract.TransportVsock] == "" || v.ports[strconv.Itoa(contract.VsockPort)] == "" {
		t.Fatalf("reading %s found %+v: it misses constants this test knows", contractDir, v)
	}
	root := repoRoot(t)
	var files int
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rp, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rp != "." && (strings.HasPrefix(d.Name(), ".") || rp == "bin" || rp == "build" || rp == contractDir) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, f := range v.copies(rp, src) {
			t.Errorf("%s: use api/agent/contract instead of the literal", f)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("checked only %d files", files)
	}
}

// copies returns one line per literal in src that copies a contract value.
func (v contractValues) copies(name string, src []byte) []string {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", name, err)}
	}
	var out []string
	report := func(lit *ast.BasicLit, constant string) {
		out = append(out, fmt.Sprintf("%s: %s is contract.%s", fset.Position(lit.Pos()), lit.Value, constant))
	}
	var stack []ast.Node
	ast.Inspect(f, func(n ast.Node) bool {
		if n == nil {
			stack = stack[:len(stack)-1]
			return true
		}
		stack = append(stack, n)
		lit, ok := n.(*ast.BasicLit)
		if !ok {
			return true
		}
		switch lit.Kind {
		case token.STRING:
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			for value, constant := range v.names {
				if containsToken(s, value, v.prefixes[value]) {
					report(lit, constant)
				}
			}
			if constant, ok := v.words[s]; ok && usedAs(stack, "role", "transport") {
				report(lit, constant)
			}
		case token.INT:
			if constant, ok := v.ports[lit.Value]; ok && inPortPlace(stack) {
				report(lit, constant)
			}
		}
		return true
	})
	return out
}

// containsToken reports whether s contains value as a whole token. A
// prefix may be followed by anything but a letter.
func containsToken(s, value string, prefix bool) bool {
	tokenByte := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_'
	}
	for i := 0; ; {
		j := strings.Index(s[i:], value)
		if j < 0 {
			return false
		}
		start, end := i+j, i+j+len(value)
		before := start == 0 || !tokenByte(s[start-1])
		after := end == len(s) || !tokenByte(s[end])
		if prefix {
			c := byte(0)
			if end < len(s) {
				c = s[end]
			}
			after = !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z')
		}
		if before && after {
			return true
		}
		i = start + 1
	}
}

// nameOf is the identifier an expression ends in: x, a.b.x, f(...)'s f.
func nameOf(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return e.Sel.Name
	case *ast.CallExpr:
		return nameOf(e.Fun)
	case *ast.IndexExpr:
		return nameOf(e.X)
	case *ast.StarExpr:
		return nameOf(e.X)
	}
	return ""
}

func nameSays(name string, words ...string) bool {
	name = strings.ToLower(name)
	for _, w := range words {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// assignedTo returns the names a literal (the last node of stack) is given
// to by its nearest enclosing field, variable, assignment, comparison or
// switch case, or nil if it is given to none of them.
func assignedTo(stack []ast.Node) []string {
	lit := stack[len(stack)-1]
	for i := len(stack) - 2; i >= 0; i-- {
		switch n := stack[i].(type) {
		case *ast.KeyValueExpr:
			if n.Value == lit || n.Value == stack[i+1] {
				return []string{nameOf(n.Key)}
			}
			return nil
		case *ast.ValueSpec:
			var names []string
			for _, id := range n.Names {
				names = append(names, id.Name)
			}
			return names
		case *ast.AssignStmt:
			var names []string
			for _, e := range n.Lhs {
				names = append(names, nameOf(e))
			}
			return names
		case *ast.BinaryExpr:
			if n.Op == token.EQL || n.Op == token.NEQ {
				return []string{nameOf(n.X), nameOf(n.Y)}
			}
		case *ast.CaseClause:
			if i > 1 {
				if sw, ok := stack[i-2].(*ast.SwitchStmt); ok && sw.Tag != nil {
					return []string{nameOf(sw.Tag)}
				}
			}
			return nil
		case ast.Stmt, *ast.FuncDecl, *ast.FuncLit, *ast.CallExpr:
			return nil
		}
	}
	return nil
}

// usedAs reports whether the literal on top of stack is given to a name
// that says one of words.
func usedAs(stack []ast.Node, words ...string) bool {
	for _, name := range assignedTo(stack) {
		if nameSays(name, words...) {
			return true
		}
	}
	return false
}

// inPortPlace reports whether the integer literal on top of stack stands
// where a port goes (see TestGuestContractInOnePlace).
func inPortPlace(stack []ast.Node) bool {
	if usedAs(stack, "port") {
		return true
	}
	for i := len(stack) - 2; i >= 0; i-- {
		call, ok := stack[i].(*ast.CallExpr)
		if !ok {
			if _, isExpr := stack[i].(ast.Expr); isExpr {
				continue
			}
			return false
		}
		if nameSays(nameOf(call.Fun), "port", "vsock", "dial", "listen", "connect") {
			return true
		}
		for _, a := range call.Args {
			if s, ok := a.(*ast.BasicLit); ok && s.Kind == token.STRING && nameSays(s.Value, "port") {
				return true
			}
		}
		return false
	}
	return false
}

// TestContractCheckerCatchesCopies guards the literal check itself.
func TestContractCheckerCatchesCopies(t *testing.T) {
	v := readContract(t)
	tests := []struct {
		name string
		src  string
		want int // copies found
	}{
		{"serial constant", `const imageSerial = "vmctl-image"`, 1},
		{"serial in an option", `var a = []string{"-disk", "x.ext4,serial=vmctl-rw,ro"}`, 1},
		{"port name in a device", `var a = "virtserialport,chardev=agent,name=vmctl.agent"`, 1},
		{"protobuf package", `var a = "vmctl.agent.v1.Agent"`, 0},
		{"volume serial format", `var a = fmt.Sprintf("vmctl-vol%d", 1)`, 1},
		{"volume serial", `var a = "vmctl-vol3"`, 1},
		{"other vmctl names", `var a = []string{"vmctl-volumes", "vmctl-writable", "vmctl-agent: "}`, 0},
		{"kernel flag", `var a = []string{"console=ttyS0", "vmctl.trace"}`, 1},
		{"ready line", `func f() { wait("vmctl-agent: ready") }`, 1},
		{"role field", `var s = Storage{Serial: x, Role: "volume"}`, 1},
		{"role comparison", `func f(d Disk) bool { return d.Role == "image" }`, 1},
		{"role switch", "func f(d Disk) { switch d.Role {\ncase \"writable\":\n} }", 1},
		{"transport", `func f() { wantTransport := "vsock"; _ = wantTransport }`, 1},
		{"everyday words", `func f() { attrs["image"] = x; join(dir, "writable"); _ = "virtio-serial" }`, 0},
		{"port constant", `const agentPort = 1024`, 1},
		{"port argument", `func f() { dialVsock(ctx, sock, 1024) }`, 1},
		{"port flag", `var port = flag.Uint("port", 1024, "vsock port")`, 1},
		{"port field", `var a = Addr{CID: 3, Port: 1024}`, 1},
		{"other 1024s", "const DefaultHistory = 1024\nvar b [1024]byte\nfunc f(n int) int { return min(n, 1024) / 1024 }", 0},
	}
	for _, tt := range tests {
		got := v.copies("x.go", []byte("package x\n"+tt.src+"\n"))
		if len(got) != tt.want {
			t.Errorf("%s: copies(%s) = %q, want %d", tt.name, tt.src, got, tt.want)
		}
	}
}
