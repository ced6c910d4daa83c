package containers

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	bolt "go.etcd.io/bbolt"
)

func newContainer(name string, created time.Time) *Container {
	return &Container{ID: NewID(), Name: name, Created: created, Config: Config{Image: "busybox"},
		State: State{Status: StatusCreated}}
}

func TestStoreRoundTrip(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC()
	a, b := newContainer("alpha", t0), newContainer("", t0.Add(time.Second))
	for _, c := range []*Container{a, b} {
		if err := s.Create(c); err != nil {
			t.Fatalf("Create(%s) = %v", c.Name, err)
		}
		if st, err := os.Stat(s.Dir(c.ID)); err != nil || !st.IsDir() {
			t.Fatalf("Create did not make the container's directory: %v", err)
		}
	}
	if b.Name == "" {
		t.Fatal("Create left an empty name: want a generated one")
	}
	for _, tc := range []struct {
		ref, want string
		err       func(error) bool
	}{
		{ref: a.ID, want: a.ID},
		{ref: "alpha", want: a.ID},
		{ref: "/alpha", want: a.ID},
		{ref: b.Name, want: b.ID},
		{ref: b.ID[:12], want: b.ID},
		{ref: "nosuch", err: errdefs.IsNotFound},
		{ref: "", err: errdefs.IsInvalidArgument},
	} {
		got, err := s.Get(tc.ref)
		if tc.err != nil {
			if !tc.err(err) {
				t.Errorf("Get(%q) = %v, want a classified error", tc.ref, err)
			}
			continue
		}
		if err != nil || got.ID != tc.want {
			t.Errorf("Get(%q) = %v, %v; want %s", tc.ref, got, err, tc.want[:12])
		}
	}

	a.State = State{Status: StatusExited, ExitCode: 3, FinishedAt: t0.Add(time.Minute)}
	if err := s.Update(a); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("alpha")
	if err != nil || got.State.ExitCode != 3 || !got.State.FinishedAt.Equal(a.State.FinishedAt) {
		t.Fatalf("after Update: Get = %+v, %v", got, err)
	}
	// Renaming frees the old name and takes the new one.
	a.Name = "beta"
	if err := s.Update(a); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("alpha"); !errdefs.IsNotFound(err) {
		t.Errorf("old name after rename: Get = %v, want not found", err)
	}
	a.Name = b.Name
	if err := s.Update(a); !errdefs.IsConflict(err) {
		t.Errorf("rename onto a taken name: Update = %v, want conflict", err)
	}

	list, err := s.List()
	if err != nil || len(list) != 2 || list[0].ID != b.ID || list[1].ID != a.ID {
		t.Fatalf("List = %v, %v; want b then a (newest first)", list, err)
	}
	if err := s.Delete(a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir(a.ID)); !os.IsNotExist(err) {
		t.Errorf("Delete left the directory: %v", err)
	}
	if _, err := s.Get(a.ID); !errdefs.IsNotFound(err) {
		t.Errorf("Get after Delete = %v, want not found", err)
	}
	// The deleted container's name is free again.
	if err := s.Create(newContainer("beta", t0)); err != nil {
		t.Errorf("Create with a freed name = %v", err)
	}
	if err := s.Update(a); !errdefs.IsNotFound(err) {
		t.Errorf("Update of a deleted record = %v, want not found", err)
	}
	if err := s.Delete("../etc"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Delete(../etc) = %v, want invalid argument", err)
	}
}

func TestStoreAmbiguousPrefix(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, b := newContainer("a", time.Now()), newContainer("b", time.Now())
	a.ID = "abcd" + a.ID[4:]
	b.ID = "abce" + b.ID[4:]
	for _, c := range []*Container{a, b} {
		if err := s.Create(c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Get("abc"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Get(abc) = %v, want an ambiguity error", err)
	}
	if c, err := s.Get("abcd"); err != nil || c.ID != a.ID {
		t.Errorf("Get(abcd) = %v, %v; want a", c, err)
	}
}

// Two Stores on one root stand for two processes: each opens the database
// on its own file descriptors, so flock excludes them as it would processes.
func TestStoreConcurrentCreateOneName(t *testing.T) {
	root := t.TempDir()
	var stores [2]*Store
	for i := range stores {
		s, err := OpenStore(root)
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = s
	}
	const n = 16
	errsCh := make(chan error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(s *Store) {
			defer wg.Done()
			errsCh <- s.Create(newContainer("web", time.Now()))
		}(stores[i%2])
	}
	wg.Wait()
	close(errsCh)
	won := 0
	for err := range errsCh {
		switch {
		case err == nil:
			won++
		case !errdefs.IsConflict(err):
			t.Errorf("Create = %v, want success or a name conflict", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d creates of one name succeeded, want exactly 1", won)
	}
	list, err := stores[1].List()
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %d records, %v; want 1", len(list), err)
	}
	// The losers left no directory behind.
	entries, _ := os.ReadDir(root)
	dirs := 0
	for _, e := range entries {
		if e.IsDir() {
			dirs++
		}
	}
	if dirs != 1 {
		t.Errorf("%d container directories, want 1", dirs)
	}
}

// crashChildEnv makes the test binary a writer that updates one record in
// a loop, printing each committed count, until it is killed.
const crashChildEnv = "VMCTL_TEST_STORE_CRASH_ROOT"

// createChildEnv makes the test binary create one container named
// "shared" and print ok, conflict or the error.
const createChildEnv = "VMCTL_TEST_STORE_CREATE_ROOT"

func TestMain(m *testing.M) {
	if root := os.Getenv(crashChildEnv); root != "" {
		crashChild(root)
		return
	}
	if root := os.Getenv(openChildEnv); root != "" {
		if _, err := OpenStore(root); err != nil {
			fmt.Println("error:", err)
		} else {
			fmt.Println("ok")
		}
		return
	}
	if root := os.Getenv(createChildEnv); root != "" {
		s, err := OpenStore(root)
		if err == nil {
			err = s.Create(newContainer("shared", time.Now()))
		}
		switch {
		case err == nil:
			fmt.Println("ok")
		case errdefs.IsConflict(err):
			fmt.Println("conflict")
		default:
			fmt.Println("error:", err)
		}
		return
	}
	os.Exit(m.Run())
}

// Processes racing to create one name: exactly one wins, across processes.
func TestStoreCreateAcrossProcesses(t *testing.T) {
	root := t.TempDir()
	const n = 6
	outs := make([]*exec.Cmd, n)
	bufs := make([]*strings.Builder, n)
	for i := range outs {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), createChildEnv+"="+root)
		bufs[i] = &strings.Builder{}
		cmd.Stdout = bufs[i]
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		outs[i] = cmd
	}
	won := 0
	for i, cmd := range outs {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("child %d: %v", i, err)
		}
		switch out := strings.TrimSpace(bufs[i].String()); out {
		case "ok":
			won++
		case "conflict":
		default:
			t.Errorf("child %d: %s", i, out)
		}
	}
	if won != 1 {
		t.Errorf("%d processes created the name, want exactly 1", won)
	}
}

func crashChild(root string) {
	s, err := OpenStore(root)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	c, err := s.Get("victim")
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for i := 1; ; i++ {
		c.State.ExitCode = i
		c.Config.Env = append(c.Config.Env[:0], fmt.Sprintf("PAD=%0512d", i)) // spread writes over pages
		if err := s.Update(c); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println(i)
		if i%7 == 0 {
			other := newContainer("", time.Now())
			if err := s.Create(other); err != nil {
				fmt.Println("error:", err)
				os.Exit(1)
			}
		}
	}
}

func TestStoreSurvivesKill(t *testing.T) {
	root := t.TempDir()
	s, err := OpenStore(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(newContainer("victim", time.Now())); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 3; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+root)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		committed := 0
		// Kill at a different point each round, in the middle of the writes.
		for sc.Scan() {
			n, err := strconv.Atoi(sc.Text())
			if err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("writer: %s", sc.Text())
			}
			committed = n
			if n >= 20+round*13 {
				break
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		c, err := s.Get("victim")
		if err != nil {
			t.Fatalf("round %d: Get after kill -9 = %v", round, err)
		}
		if c.State.ExitCode < committed {
			t.Fatalf("round %d: record says %d, but the writer had committed %d", round, c.State.ExitCode, committed)
		}
		if _, err := s.List(); err != nil {
			t.Fatalf("round %d: List after kill -9 = %v", round, err)
		}
		// A write after the crash works too.
		if err := s.Update(c); err != nil {
			t.Fatalf("round %d: Update after kill -9 = %v", round, err)
		}
	}
}

func TestStoreImportsLegacyRecords(t *testing.T) {
	root := t.TempDir()
	old := newContainer("legacy", time.Now().UTC().Truncate(time.Second))
	old.State = State{Status: StatusExited, ExitCode: 7}
	if err := os.Mkdir(filepath.Join(root, old.ID), 0o700); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(old)
	if err := os.WriteFile(filepath.Join(root, old.ID, "container.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	// A directory with a broken record is not imported and does not fail the open.
	broken := NewID()
	os.Mkdir(filepath.Join(root, broken), 0o700)
	os.WriteFile(filepath.Join(root, broken, "container.json"), []byte("{"), 0o600)

	for i := 0; i < 2; i++ { // the second open must not import again
		s, err := OpenStore(root)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Get("legacy")
		if err != nil || got.ID != old.ID || got.State.ExitCode != 7 || !got.Created.Equal(old.Created) {
			t.Fatalf("open %d: Get(legacy) = %+v, %v", i, got, err)
		}
		if list, _ := s.List(); len(list) != 1 {
			t.Fatalf("open %d: List = %d records, want 1", i, len(list))
		}
	}
	if _, err := os.Stat(filepath.Join(root, old.ID, "container.json.imported")); err != nil {
		t.Errorf("imported record was not renamed: %v", err)
	}
}

// TestStoreKeepsWhatCreateResolved: the hypervisor, image disk and spec a
// create resolved survive the store, and a record as the version before
// them wrote it (the user's hypervisor request, none of the three) still
// loads, as not resolved.
func TestStoreKeepsWhatCreateResolved(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := newContainer("new", time.Now().UTC())
	c.Config.Hypervisor, c.Config.Accel, c.Config.ImageDisk = "qemu", "tcg", "/var/lib/vmctl/disks/sha256-ab.ext4"
	c.Config.Spec = &specs.Spec{Version: specs.Version, Process: &specs.Process{Args: []string{"sh"}, Cwd: "/"}, Hostname: "box"}
	if !c.Config.Resolved() {
		t.Fatalf("Resolved() = false for %+v", c.Config)
	}
	if err := s.Create(c); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("new")
	if err != nil || !reflect.DeepEqual(got.Config, c.Config) {
		t.Fatalf("Get(new) = %+v, %v; want config %+v", got, err, c.Config)
	}

	id := NewID()
	old := `{"id":"` + id + `","name":"old","created":"2025-01-02T03:04:05Z",` +
		`"config":{"image":"busybox","imageId":"sha256:0123","args":["sh"],"env":["PATH=/bin"],"workingDir":"",` +
		`"hostname":"old","tty":false,"openStdin":false,"hypervisor":"auto","autoRemove":false},` +
		`"state":{"status":"exited","exitCode":0,"oomKilled":false,"driver":"qemu","accel":"tcg"}}`
	err = s.update(func(recs, names *bolt.Bucket) error {
		if err := names.Put([]byte("old"), []byte(id)); err != nil {
			return err
		}
		return recs.Put([]byte(id), []byte(old))
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err = s.Get("old")
	if err != nil || got.Config.Hypervisor != "auto" || got.Config.ImageID != "sha256:0123" || got.State.Driver != "qemu" {
		t.Fatalf("Get(old) = %+v, %v", got, err)
	}
	if got.Config.Resolved() {
		t.Errorf("a record of the earlier version is Resolved(): %+v", got.Config)
	}
}

// openChildEnv makes the test binary open the store and print ok or the
// error.
const openChildEnv = "VMCTL_TEST_STORE_OPEN_ROOT"

// Processes that open a store with legacy records at once (vmctld and a
// vmctl ps right after an upgrade) all succeed, and the records are
// imported once.
func TestStoreImportAcrossProcesses(t *testing.T) {
	for round := 0; round < 3; round++ {
		root := t.TempDir()
		for i := 0; i < 8; i++ {
			old := newContainer(fmt.Sprintf("legacy%d", i), time.Now().UTC())
			if err := os.Mkdir(filepath.Join(root, old.ID), 0o700); err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(old)
			if err := os.WriteFile(filepath.Join(root, old.ID, legacyRecord), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		const n = 6
		cmds := make([]*exec.Cmd, n)
		outs := make([]*strings.Builder, n)
		for i := range cmds {
			cmds[i] = exec.Command(os.Args[0], "-test.run=^$")
			cmds[i].Env = append(os.Environ(), openChildEnv+"="+root)
			outs[i] = &strings.Builder{}
			cmds[i].Stdout = outs[i]
		}
		for _, cmd := range cmds {
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
		}
		for i, cmd := range cmds {
			if err := cmd.Wait(); err != nil {
				t.Fatalf("child %d: %v", i, err)
			}
			if out := strings.TrimSpace(outs[i].String()); out != "ok" {
				t.Errorf("round %d: process %d opening the store: %s", round, i, out)
			}
		}
		s, err := OpenStore(root)
		if err != nil {
			t.Fatal(err)
		}
		if list, err := s.List(); err != nil || len(list) != 8 {
			t.Fatalf("round %d: List = %d records, %v; want the 8 imported once", round, len(list), err)
		}
	}
}

// BenchmarkStoreGet and BenchmarkStoreUpdate measure the per-operation
// open that lets several processes share the store.
func BenchmarkStoreGet(b *testing.B) {
	s, err := OpenStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		s.Create(newContainer("", time.Now()))
	}
	c := newContainer("target", time.Now())
	s.Create(c)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Get("target"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStoreUpdate(b *testing.B) {
	s, err := OpenStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	c := newContainer("target", time.Now())
	s.Create(c)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.State.ExitCode = i
		if err := s.Update(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStoreList(b *testing.B) {
	s, err := OpenStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		s.Create(newContainer("", time.Now()))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.List(); err != nil {
			b.Fatal(err)
		}
	}
}

// corruptRecord overwrites a stored record with raw bytes, as a damaged
// disk or a foreign tool could leave it.
func corruptRecord(t *testing.T, root, id string, raw []byte) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(root, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketV1).Bucket(bucketContainers).Put([]byte(id), raw)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A record whose body does not belong to its key is corrupt: it is not
// listed (its short or foreign ID would be taken for a container's), Get
// says so, and Delete still frees its name.
func TestStoreCorruptRecords(t *testing.T) {
	root := t.TempDir()
	s, err := OpenStore(root)
	if err != nil {
		t.Fatal(err)
	}
	other, web, garbled := newContainer("other", time.Now()), newContainer("web", time.Now()), newContainer("garbled", time.Now())
	for _, c := range []*Container{other, web, garbled} {
		if err := s.Create(c); err != nil {
			t.Fatal(err)
		}
	}
	// web's record claims another ID: short, then other's.
	for _, claimed := range []string{"x", other.ID} {
		body, _ := json.Marshal(&Container{ID: claimed, Name: "web", State: State{Status: StatusRunning, VMMPid: 1}})
		corruptRecord(t, root, web.ID, body)
		list, err := s.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range list {
			if c.ID == claimed && c.Name == "web" {
				t.Errorf("List returned web's record under the ID %q it claims", claimed)
			}
		}
		if c, err := s.Get(web.ID); err == nil {
			t.Errorf("Get of a record claiming ID %q = %+v, want a corrupt-record error", claimed, c)
		}
	}
	corruptRecord(t, root, garbled.ID, []byte("{not json"))
	for _, c := range []*Container{web, garbled} {
		if err := s.Delete(c.ID); err != nil {
			t.Fatalf("Delete(%s) of a corrupt record = %v", c.Name, err)
		}
		if err := s.Create(newContainer(c.Name, time.Now())); err != nil {
			t.Errorf("Create(%s) after deleting the corrupt record = %v, want the name free", c.Name, err)
		}
	}
	if got, err := s.Get("other"); err != nil || got.ID != other.ID {
		t.Errorf("Get(other) = %v, %v; the corrupt records must not touch it", got, err)
	}
}
