package kvm

import "runtime"

// lockThread pins the calling goroutine to its thread for good, so the
// tid a test signals stays the vCPU's thread.
func lockThread() { runtime.LockOSThread() }
