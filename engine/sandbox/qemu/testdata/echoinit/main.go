// Command echoinit is a minimal guest PID 1 for the driver's tests: it
// opens the agent's virtio-serial port (contract.SerialPortName) and echoes
// what it reads. A line "reboot" makes it reboot the guest (QEMU then
// exits), "panic" makes it exit, which panics the kernel ("Attempted to
// kill init"), "disks" lists the virtio-blk disks as "name:serial:ro"
// fields, "nics" the network interfaces but lo as "mac:mtu" fields,
// "rebind" unbinds and binds again every virtio disk and NIC driver, as the
// agent does in a VM restored from a saved state, and answers "ok".
package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmctl/vmctl/api/agent/contract"
)

func main() {
	// Mount errors are reported, not fatal: the port lookup below says
	// what is missing.
	if err := syscall.Mount("devtmpfs", "/dev", "devtmpfs", 0, ""); err != nil && err != syscall.EBUSY {
		fmt.Println("echoinit: mount /dev:", err)
	}
	if err := syscall.Mount("sysfs", "/sys", "sysfs", 0, ""); err != nil {
		fmt.Println("echoinit: mount /sys:", err)
	}
	port, err := findPort(contract.SerialPortName)
	if err != nil {
		fmt.Println("echoinit:", err)
		halt()
	}
	f, err := os.OpenFile(port, os.O_RDWR, 0)
	if err != nil {
		fmt.Println("echoinit:", err)
		halt()
	}
	fmt.Println("echoinit: serving on", port)
	r := bufio.NewReader(f)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			// The host is not connected (yet, or any more): close the port,
			// open it again and wait for the host, as the agent does, so
			// that the host sees the guest waiting for its next connection
			// (and a guest saved there waits for the restored VM's host).
			f.Close()
			if f, err = os.OpenFile(port, os.O_RDWR, 0); err != nil {
				fmt.Println("echoinit:", err)
				halt()
			}
			for !hostConnected(f) {
				time.Sleep(20 * time.Millisecond)
			}
			r = bufio.NewReader(f)
			continue
		}
		switch strings.TrimSpace(line) {
		case "reboot":
			f.WriteString("bye\n")
			syscall.Sync()
			syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART)
		case "panic":
			os.Exit(3)
		case "disks":
			f.WriteString(disks() + "\n")
		case "nics":
			f.WriteString(nics() + "\n")
		case "rebind":
			f.WriteString(rebind() + "\n")
		default:
			f.WriteString(line)
		}
	}
}

func findPort(name string) (string, error) {
	for range 50 {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err == nil && strings.TrimSpace(string(b)) == name {
				return "/dev/" + filepath.Base(filepath.Dir(n)), nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", fmt.Errorf("no virtio port named %s", name)
}

func halt() {
	syscall.Reboot(syscall.LINUX_REBOOT_CMD_RESTART)
	select {}
}

func nics() string {
	var out []string
	dirs, _ := filepath.Glob("/sys/class/net/*")
	for _, d := range dirs {
		if filepath.Base(d) == "lo" {
			continue
		}
		mac, _ := os.ReadFile(d + "/address")
		mtu, _ := os.ReadFile(d + "/mtu")
		out = append(out, strings.TrimSpace(string(mac))+":"+strings.TrimSpace(string(mtu)))
	}
	return strings.Join(out, " ")
}

func disks() string {
	var out []string
	dirs, _ := filepath.Glob("/sys/block/vd*")
	for _, d := range dirs {
		serial, _ := os.ReadFile(d + "/serial")
		ro, _ := os.ReadFile(d + "/ro")
		out = append(out, filepath.Base(d)+":"+strings.TrimSpace(string(serial))+":"+strings.TrimSpace(string(ro)))
	}
	return strings.Join(out, " ")
}

func rebind() string {
	for _, drv := range []string{"virtio_blk", "virtio_net"} {
		dir := "/sys/bus/virtio/drivers/" + drv
		devs, _ := filepath.Glob(dir + "/virtio*")
		for _, dev := range devs {
			name := filepath.Base(dev)
			if err := os.WriteFile(dir+"/unbind", []byte(name), 0); err != nil {
				return err.Error()
			}
			if err := os.WriteFile(dir+"/bind", []byte(name), 0); err != nil {
				return err.Error()
			}
		}
	}
	return "ok"
}

// hostConnected polls the port: the driver reports POLLHUP while the host
// side is closed.
func hostConnected(f *os.File) bool {
	fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, 0); err != nil {
		return false
	}
	return fds[0].Revents&unix.POLLHUP == 0
}
