// Package contract is what the host and the guest agent agree on outside
// the ttrpc messages of api/agent/v1: where the agent listens, how the disks
// of a container are named and what each is for, and what the guest kernel
// command line may ask of the agent. The engine (its sandbox drivers and its
// agent client) and the guest agent both import it, so each value is written
// once; tests/architecture_test.go fails when one of them appears as a
// literal anywhere else.
//
// It holds names and numbers only: no transport code, no validation of
// what a guest sends (the agent client does that).
package contract

import "strconv"

// The agent channel. The agent serves ttrpc on whichever of these the VM
// has, and reports which one answered in HealthResponse.transport.
const (
	// VsockPort is the vsock port the agent listens on. Under vmctl-vmm the
	// host reaches it through the VM's hybrid vsock socket
	// ("CONNECT <port>\n").
	VsockPort = 1024
	// SerialPortName is the name of the virtio-serial port the agent
	// serves on where the host has no vsock (QEMU without vhost-vsock); the
	// guest finds it in /sys/class/virtio-ports/*/name.
	SerialPortName = "vmctl.agent"

	// TransportVsock and TransportSerial are the values of
	// HealthResponse.transport.
	TransportVsock  = "vsock"
	TransportSerial = "virtio-serial"
)

// Disks. The host attaches each disk of a container as virtio-blk with one
// of these serials and names the same serial in the disk's Storage; the
// agent finds the device by its serial, never by probe order. A serial is
// at most 20 bytes (VIRTIO_BLK_ID_BYTES).
const (
	// ImageDiskSerial is the container image's read-only disk, or the
	// top one of several (see ImageDiskSerialN).
	ImageDiskSerial = "vmctl-image"
	// WritableDiskSerial is the container's writable disk: the overlay's
	// upper and work directories.
	WritableDiskSerial = "vmctl-rw"
	// VolumeDiskSerialPrefix followed by the volume's index in the
	// container's mounts is a volume's serial (see VolumeDiskSerial).
	VolumeDiskSerialPrefix = "vmctl-vol"
)

// ImageDiskSerialN is the serial of the i-th of an image's read-only
// disks, counted from the top one (ImageDiskSerial). The agent stacks them
// in the order the storages list them, the first on top.
func ImageDiskSerialN(i int) string {
	if i == 0 {
		return ImageDiskSerial
	}
	return ImageDiskSerial + strconv.Itoa(i)
}

// VolumeDiskSerial is the serial of the container's i-th volume disk.
func VolumeDiskSerial(i int) string { return VolumeDiskSerialPrefix + strconv.Itoa(i) }

// Storage roles (Storage.role): what the agent does with a disk.
const (
	// RoleImage is a read-only lower layer of the container's overlay.
	RoleImage = "image"
	// RoleWritable holds the overlay's upper and work directories.
	RoleWritable = "writable"
	// RoleVolume is a named volume, bound into the container at the
	// storage's mount point.
	RoleVolume = "volume"
	// RoleBind is a host directory shared over virtio-fs or virtio-9p
	// (the storage's fstype: "virtiofs" or "9p"; a bind mount), bound into
	// the container at the storage's mount point; its serial is the
	// share's tag (BindShareTag).
	RoleBind = "bind"
	// RoleRootfs is a host directory shared over virtio-fs or virtio-9p
	// that is the container's root file system itself, read-write: the
	// rootfs a containerd snapshotter prepared and the shim mounted on the
	// host. With it there are no image or writable disks. Its serial is
	// the share's tag (RootfsShareTag).
	RoleRootfs = "rootfs"
)

// RootfsShareTag is the mount tag of a container's rootfs share.
const RootfsShareTag = "vmctl-rootfs"

// BindShareTagPrefix starts the mount tag of a container's bind shares.
const BindShareTagPrefix = "vmctl-bind"

// BindShareTag is the mount tag of the container's i-th bind
// mount.
func BindShareTag(i int) string { return BindShareTagPrefix + strconv.Itoa(i) }

// BindMountOptions9P are the mount options of a 9p bind share: the virtio
// transport, the Linux dialect, the largest message the kernel's virtio
// transport takes (4 KiB x 125), and page caching only for mmap, so the
// host's changes are seen at once (the share keeps no cache).
var BindMountOptions9P = []string{"trans=virtio", "version=9p2000.L", "msize=512000", "cache=mmap", "access=client"}

// The guest kernel command line. The agent reads /proc/cmdline for these
// flags, bare or as flag=value; the drivers put nothing else there that
// the agent reads.
const (
	// SelftestFlag makes the agent print SelftestReadyLine on the console
	// and reboot at once, without serving: the bare-boot reference of the
	// boot benchmarks.
	SelftestFlag = "vmctl.selftest"
	// SelftestReadyLine is the console line of a selftest boot.
	SelftestReadyLine = "vmctl-agent: ready"
	// TraceFlag makes the agent time the steps of each container start
	// and print them as a table on the console.
	TraceFlag = "vmctl.trace"
)

// Network interfaces. The host names every NIC of a VM in
// ConfigureNetwork; the i-th NIC it attaches (eth0 first, as under Docker)
// is InterfaceName(i), and the agent renames the device with that MAC
// address to it.
const InterfaceNamePrefix = "eth"

// InterfaceName is the name of a VM's i-th NIC in the guest.
func InterfaceName(i int) string { return InterfaceNamePrefix + strconv.Itoa(i) }

// The container init's modes, chosen by an annotation of the OCI spec.
const (
	// AnnotationInit names the init's mode; absent, the init execs the
	// spec's process at StartContainer.
	AnnotationInit = "io.vmctl.init"
	// InitPause makes the init set up the container and then wait,
	// running nothing of the image's, until the container is removed:
	// a container that exists to run ExecProcess calls (a build's steps).
	// The spec's process is not looked up or run.
	InitPause = "pause"
	// InitReap makes the init stay the container's PID 1 (docker run
	// --init): it starts the spec's process as its child, forwards it the
	// signals it gets, reaps every orphan, and exits with the child's
	// status.
	InitReap = "reap"
)

// AnnotationGroupAdd lists, comma-separated, the groups a container's
// processes (and its execs) join besides their user's (docker run
// --group-add): names, looked up in the container's /etc/group, or
// numbers.
const AnnotationGroupAdd = "io.vmctl.group-add"

// AnnotationPrivileged marks a privileged container (docker run
// --privileged), with the value "true": its /dev is a tmpfs that allows
// device access and holds a node for every device of its VM (the VM's
// disks, /dev/kmsg...), and its root allows device nodes too, instead of
// the standard nodes on nodev mounts. Its capabilities, seccomp profile
// and masked paths are the spec's own.
const AnnotationPrivileged = "io.vmctl.privileged"

// What of an OCI seccomp profile (the spec's linux.seccomp) the agent
// compiles into a filter for its x86_64 guest. The engine refuses a
// profile beyond these at create, the agent refuses it at CreateContainer.
// Syscall names the guest's table does not know are skipped, as runc
// skips them; so are the profile's architectures (the guest kernel runs
// x86_64 system calls only, every other ABI answers ENOSYS).
var (
	// SeccompActions are the actions a profile's defaultAction and rules
	// may name. SCMP_ACT_NOTIFY is not among them: nothing in a guest
	// listens for notifications.
	SeccompActions = []string{
		"SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_TRAP",
		"SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG",
	}
	// SeccompOperators are the comparisons of a rule's args.
	SeccompOperators = []string{
		"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ",
	}
	// SeccompFlags are the filter flags a profile may ask for.
	SeccompFlags = []string{"SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"}
)

// SeccompMaxArg is the highest argument index a rule may compare (a
// system call has six), SeccompMaxErrno the highest errno it may return
// (the kernel's MAX_ERRNO).
const (
	SeccompMaxArg   = 5
	SeccompMaxErrno = 4095
)

// Capabilities are the Linux capabilities by number
// (include/uapi/linux/capability.h): the names a container's bounding set
// may hold, which the engine checks docker's --cap-add and --cap-drop
// against and the agent drops by number.
var Capabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
	"CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO",
	"CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN",
	"CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
	"CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
	"CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
	"CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}
