package main

import (
	"reflect"
	"syscall"
	"testing"
)

func TestCgroupMounts(t *testing.T) {
	hybrid := `22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
30 22 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755,inode64
31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu,cpuacct
39 30 0:36 /init.scope /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
40 30 0:37 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
41 1 0:38 / /sys/fs/cgroupx rw - tmpfs tmpfs rw
50 22 0:40 / /sys/kernel/debug rw - debugfs debugfs rw`
	want := []cgroupMount{
		{source: "tmpfs", target: "/sys/fs/cgroup", fstype: "tmpfs", data: "mode=755", flags: syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC},
		{source: "cgroup", target: "/sys/fs/cgroup/cpu,cpuacct", fstype: "cgroup", data: "cpu,cpuacct", flags: syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC},
		{source: "cgroup", target: "/sys/fs/cgroup/systemd", fstype: "cgroup", data: "xattr,name=systemd"},
		{source: "cgroup2", target: "/sys/fs/cgroup/unified", fstype: "cgroup2", data: "nsdelegate", flags: syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC},
	}
	if got := cgroupMounts(hybrid); !reflect.DeepEqual(got, want) {
		t.Errorf("cgroupMounts(hybrid) =\n%+v\nwant\n%+v", got, want)
	}

	unified := "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
	want = []cgroupMount{{source: "cgroup2", target: "/sys/fs/cgroup", fstype: "cgroup2", data: "nsdelegate,memory_recursiveprot", flags: syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC}}
	if got := cgroupMounts(unified); !reflect.DeepEqual(got, want) {
		t.Errorf("cgroupMounts(unified) = %+v, want %+v", got, want)
	}

	// What `ip netns exec` leaves: a sysfs without the hierarchies.
	if got := cgroupMounts("500 499 0:90 / /sys rw,relatime - sysfs vmctl-bench rw\n"); len(got) != 0 {
		t.Errorf("cgroupMounts(a fresh sysfs) = %+v, want none", got)
	}
}
