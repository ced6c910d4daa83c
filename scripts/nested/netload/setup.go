package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/internal/initramfs"
)

// mktap creates a persistent tap that takes vnet headers, as the engine
// creates one for a VM (L1's busybox has no `ip tuntap`).
func mktap(args []string) error {
	fs := flag.NewFlagSet("mktap", flag.ExitOnError)
	mtu := fs.Int("mtu", 0, "MTU (0: the kernel's default)")
	fs.Parse(args)
	if fs.NArg() != 1 {
		return errors.New("usage: netload mktap NAME [-mtu N]")
	}
	name := fs.Arg(0)
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("TUNSETIFF %s: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("TUNSETPERSIST %s: %w", name, err)
	}
	if *mtu == 0 {
		return nil
	}
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(sock)
	m, _ := unix.NewIfreq(name)
	m.SetUint32(uint32(*mtu))
	if err := unix.IoctlIfreq(sock, unix.SIOCSIFMTU, m); err != nil {
		return fmt.Errorf("MTU %d on %s: %w", *mtu, name, err)
	}
	return nil
}

// l2Init is the guest's /init: eth0 gets netload.addr= from the kernel
// command line, the server runs until a client sends QUIT, then the guest
// reboots (which ends its VMM). The L2-NET lines tell the host side what
// the guest negotiated and counted.
const l2Init = `#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^$1=//p"; }
n=/sys/class/net/eth0
ip link set lo up
ip link set eth0 up
ip addr add "$(arg netload.addr)" dev eth0
echo "L2-NET up features=$(cat $n/device/features) mtu=$(cat $n/mtu) addr=$(arg netload.addr)"
netload serve -listen :5201
s=$n/statistics
echo "L2-NET interrupts $(grep virtio /proc/interrupts | tr -s ' ' | tr '\n' ';')"
echo "L2-NET done rx_packets=$(cat $s/rx_packets) rx_errors=$(cat $s/rx_errors) rx_dropped=$(cat $s/rx_dropped) rx_length_errors=$(cat $s/rx_length_errors) tx_packets=$(cat $s/tx_packets) tx_errors=$(cat $s/tx_errors) tx_dropped=$(cat $s/tx_dropped)"
reboot -f
`

// l2image writes the guest's initramfs: busybox, this (static) program
// and l2Init.
func l2image(args []string) error {
	fs := flag.NewFlagSet("l2image", flag.ExitOnError)
	out := fs.String("o", "", "output `file`")
	busybox := fs.String("busybox", "/bin/busybox", "static busybox")
	fs.Parse(args)
	if *out == "" {
		return errors.New("no -o")
	}
	bb, err := os.ReadFile(*busybox)
	if err != nil {
		return fmt.Errorf("busybox: %w (install busybox-static)", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	me, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	img := initramfs.Image{
		Init: []byte(l2Init),
		Dirs: []string{"bin"},
		Files: []initramfs.File{
			{Path: "bin/busybox", Mode: 0o755, Data: bb},
			{Path: "bin/netload", Mode: 0o755, Data: me},
		},
	}
	if err := initramfs.Write(&buf, img); err != nil {
		return err
	}
	return os.WriteFile(*out, buf.Bytes(), 0o644)
}
