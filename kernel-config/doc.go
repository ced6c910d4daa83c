// Package kernelconfig holds the vmctl guest kernel configuration: the Kconfig
// fragments (*.config) that scripts/build-kernel.sh applies on top of
// `make tinyconfig`, and tests that check the fragments and boot the installed
// kernel under QEMU to prove the features the agent relies on.
//
// It has no code used at run time, and it does not build the kernel: the shell
// script does, with the kernel's own build system. README.md says why each
// option is there.
package kernelconfig
