# vmctl: containers, each in its own lightweight VM.
#
#   make demo    install what is missing, build everything, run a container in a microVM
#   make test    everything CI runs: unit tests, fuzz smoke, end-to-end on QEMU
#   make bench   benchmarks, printed as side-by-side tables
#   make build   binaries into bin/, guest image into bin/guest/
#   make kernel  guest kernel into bin/guest/ (cached outside the tree by config hash)
#   make install binaries, guest files and systemd units under PREFIX (default /usr/local)
#   make fuzz-long   every fuzz target for 10 minutes (FUZZTIME), outside make test
#   make e2e-nested  the native VMM booting the guest inside a nested L1 (QEMU TCG + emulated SVM)
#   make appliance   the demo appliance: build/appliance/vmctl.ova (VirtualBox, VMware) and vmctl.qcow2
#   make appliance-test  the appliance booted under QEMU, with and without emulated AMD-V, driven over its console
#   make proto   regenerate api/*/v1/*.pb.go from the .proto files (generators pinned in scripts/proto.sh)

SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/vmctl/vmctl/engine.Version=$(VERSION)
AGENT_LDFLAGS := -s -w -X github.com/vmctl/vmctl/guest-agent/service.Version=$(VERSION)
export GOFLAGS := -trimpath -buildvcs=false

BIN := bin
GUEST := $(BIN)/guest
DATA_ROOT ?= /var/lib/vmctl

# make install: binaries in PREFIX/bin, the guest kernel and image in
# PREFIX/lib/vmctl/guest (where an installed vmctl and vmctld look for them),
# vmctld.service and vmctld.socket where systemd finds local units. DESTDIR
# stages the whole tree elsewhere (packaging, tests).
PREFIX ?= /usr/local
BINDIR = $(PREFIX)/bin
GUESTDIR = $(PREFIX)/lib/vmctl/guest
UNITDIR ?= $(PREFIX)/lib/systemd/system

.PHONY: all demo test unit e2e e2e-nested nested-prepare fuzz fuzz-long bench build kernel image proto deps clean vet install appliance appliance-test

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/vmctl ./cmd/vmctl
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/vmctld ./cmd/vmctld
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/vmctl-vmm ./cmd/vmctl-vmm
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/containerd-shim-vmctl-v1 ./cmd/containerd-shim-vmctl-v1
	CGO_ENABLED=0 $(GO) build -ldflags '$(AGENT_LDFLAGS)' -o $(BIN)/vmctl-agent ./cmd/vmctl-agent
	$(GO) run ./scripts/mkguest -init $(BIN)/vmctl-agent -o $(GUEST)/initramfs.img

kernel: deps
	@bash scripts/build-kernel.sh $(GUEST)

install: build kernel
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(GUESTDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 $(BIN)/vmctl $(BIN)/vmctld $(BIN)/vmctl-vmm $(BIN)/containerd-shim-vmctl-v1 $(DESTDIR)$(BINDIR)/
	install -m 0644 $(GUEST)/vmlinuz $(GUEST)/initramfs.img $(GUEST)/kernel.release $(DESTDIR)$(GUESTDIR)/
	sed 's|@BINDIR@|$(BINDIR)|g' scripts/systemd/vmctld.service > $(DESTDIR)$(UNITDIR)/vmctld.service
	install -m 0644 scripts/systemd/vmctld.socket $(DESTDIR)$(UNITDIR)/vmctld.socket
	@echo "installed under $(DESTDIR)$(PREFIX); start the daemon with: systemctl daemon-reload && systemctl enable --now vmctld.socket"

image: deps
	$(GO) run ./scripts/mkimage -o build/busybox.tar

# The contracts' Go code, from api/*/v1/*.proto. tests/proto_test.go checks
# that the checked-in files are what this produces.
proto: deps
	@bash scripts/proto.sh

demo: build kernel image
	$(BIN)/vmctl --data-root $(DATA_ROOT) load -i build/busybox.tar
	$(BIN)/vmctl --data-root $(DATA_ROOT) info
	$(BIN)/vmctl --data-root $(DATA_ROOT) run --rm busybox uname -a

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt -w needed: $$out"; exit 1; fi

unit: deps
	$(GO) test -count=1 ./...

# Short fuzzing of every parser of untrusted input; the seed corpora run in `unit`.
fuzz:
	@bash scripts/fuzz-smoke.sh

# The same targets for longer (FUZZTIME each, 10 minutes unless given):
# about 4 hours for all of them, so not part of `make test`.
fuzz-long:
	@FUZZTIME=$${FUZZTIME:-10m} bash scripts/fuzz-smoke.sh

e2e: build kernel image
	VMCTL_E2E=1 $(GO) test -count=1 -timeout 30m -v ./tests/... 2>&1 | tee build/e2e.log | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)' ; exit $${PIPESTATUS[0]}

# The L1 kernel of the nested harness (Debian's cloud kernel, downloaded with
# apt, never installed), cached outside the tree.
nested-prepare: deps
	@bash scripts/nested/prepare.sh >/dev/null

# The native VMM booting the guest inside an L1 whose (emulated) SVM gives it
# a full /dev/kvm: how CI proves vmctl-vmm boots Linux on hosts that cannot.
e2e-nested: build kernel nested-prepare
	VMCTL_E2E=1 $(GO) test -count=1 -timeout 30m -v ./tests/nested/


# The demo appliance (README "Demo in VirtualBox or VMware"): Debian 12 with
# vmctl installed, from Debian's packages; its base is cached outside the tree.
appliance: build kernel image
	@bash scripts/appliance/build.sh

# The appliance's OVA checked as an importer reads it, and its qcow2 booted
# under QEMU on a CPU without and with (emulated) AMD-V, driven over the
# serial console: log in, vmctl run, docker run.
appliance-test: appliance
	VMCTL_APPLIANCE=$(CURDIR)/build/appliance $(GO) test -count=1 -timeout 60m -v ./tests/appliance/

# -p 1: several packages boot VMs under software emulation; run side by side
# on a 2-core machine they starve each other's guests of CPU.
# The appliance (about 5 minutes cold, under 2 with its base cached) and its
# boots under QEMU (about 4 minutes) are part of it.
# The core run tests again with every VM booted (VMCTL_SNAPSHOTS=false), after
# the whole suite ran with runs started from saved guests (the default).
COLD_BOOT_TESTS = ^(TestRunPrintsGuestKernelRelease|TestExitStatusIsPropagated|TestStdinIsStreamed|TestStdoutAndStderrStaySeparate|TestContainerIsolation|TestEnvWorkdirUser|TestImageDefaultCommand|TestCPUsSizeTheVM|TestWritesStayInTheContainer|TestDockerCLI|TestDockerExec|TestNetworkDefault|TestVolumes|TestInteractiveTerminal|TestSignalsAreForwarded|TestDaemonRestartReadopts|TestSnapshotsFollowEnvironment)$$

test: build kernel image nested-prepare vet appliance
	VMCTL_E2E=1 VMCTL_APPLIANCE=$(CURDIR)/build/appliance $(GO) test -p 1 -count=1 -timeout 60m ./...
	VMCTL_E2E=1 VMCTL_SNAPSHOTS=false $(GO) test -count=1 -timeout 20m -run '$(COLD_BOOT_TESTS)' ./tests/
	@bash scripts/fuzz-smoke.sh

bench: build kernel image nested-prepare appliance
	$(GO) run ./scripts/bench

clean:
	rm -rf $(BIN) build
