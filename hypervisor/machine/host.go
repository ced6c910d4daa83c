package machine

import "github.com/vmctl/vmctl/internal/kvmcap"

// Host names the files the capability check reads (internal/kvmcap, the
// same check the engine makes); tests point them at fake trees.
type Host kvmcap.Host

// DefaultHost is this machine's /dev, /proc and /sys.
var DefaultHost = Host(kvmcap.Default)

// ErrKVMCannotRunGuests is wrapped by CheckHost's error where this host
// cannot run a stock Linux guest on KVM (no /dev/kvm, PVM, or no vmx/svm).
var ErrKVMCannotRunGuests = kvmcap.ErrCannotRunGuests

// ErrNoKVM is wrapped too (besides ErrKVMCannotRunGuests) where the host has
// no /dev/kvm at all, so not even hand-made guests can run.
var ErrNoKVM = kvmcap.ErrNoDevice

// CheckHost reports, in one line, why h's /dev/kvm cannot run full Linux
// guests, or nil if it can.
func (h Host) CheckHost() error { return kvmcap.Host(h).Check() }
