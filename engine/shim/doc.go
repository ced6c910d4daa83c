// Package shim is vmctl's containerd runtime, io.containerd.vmctl.v1: a
// shim v2 task service (containerd's task API over ttrpc) that runs each
// task in its own VM, on the engine's sandbox drivers and typed agent
// client. It does not talk to vmctld.
//
// One shim process serves one VM: a task's, or a Kubernetes pod's, whose
// containers all go to the shim its sandbox started (pod.go). containerd
// starts the shim binary with
// `start` in the task's bundle; it re-executes itself in the
// background on a socket of its own and prints the socket's address, the
// plain form every containerd from 1.6 on reads. Create mounts the rootfs
// containerd's snapshotter prepared (its overlay mounts) on the bundle's
// rootfs directory, boots a VM that shares that directory with the guest
// (virtio-fs under QEMU, 9P under vmctl-vmm) and has the agent create the
// container on it from the bundle's OCI spec. The container's writes land
// in the snapshot, so containerd's snapshot semantics (diff, commit) hold,
// and nothing is copied: starting costs the same for any image size.
//
// Stdio goes through the FIFOs containerd names, copied to and from the
// agent's stdio calls. Exits are published as /tasks/exit events once
// every byte of output is delivered. The VM ends as soon as the
// container's init has exited (its memory is the host's again); Delete
// then only unmounts and removes what is left.
//
// The VM dies with the shim where the kernel's parent-death signal can
// reach it; a jailed QEMU, which loses that signal when it changes user,
// survives a shim killed with SIGKILL, and containerd's cleanup, the
// binary's `delete` command (binary.go), finds it through the bundle's
// vm.json and ends it, and unmounts the rootfs.
package shim
