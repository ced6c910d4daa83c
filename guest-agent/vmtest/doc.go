// Package vmtest boots the agent as /init of a real guest under QEMU and
// drives it over its virtio-serial channel, the way the engine does. It has
// tests only; it skips when QEMU or the guest kernel (bin/guest/vmlinuz) is
// missing.
//
// It builds its own minimal initramfs; the production image builder is
// internal/initramfs.
package vmtest
