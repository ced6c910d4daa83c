#!/bin/busybox sh
# PID 1 of the guest kernel boot test. Each check prints "VMCTL-OK <name>" or
# "VMCTL-FAIL <name>: <output>"; boot_test.go decides which checks a boot must pass.
# The mode is chosen by vmctl.mode= on the kernel command line.
/bin/busybox mkdir -p /bin /proc /sys /dev /mnt /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# DEVTMPFS_MOUNT does not apply to an initramfs root: PID 1 mounts /dev itself.
mount -t devtmpfs devtmpfs /dev

check() {
	name=$1
	shift
	if out=$("$@" 2>&1); then
		echo "VMCTL-OK $name"
	else
		echo "VMCTL-FAIL $name: $(echo "$out" | tr '\n' ' ')"
	fi
}

echo "VMCTL-OK init"
echo "VMCTL-RELEASE $(uname -r)"
echo "VMCTL-UPTIME $(cut -d' ' -f1 /proc/uptime)"
# The agent logs through /dev/kmsg without a level prefix; the console must show it even with quiet.
echo "VMCTL-KMSG from pid 1" >/dev/kmsg

mode=$(sed -n 's/.*vmctl\.mode=\([a-z]*\).*/\1/p' /proc/cmdline)

if [ "$mode" = panic ]; then
	# PID 1 exiting panics the kernel; panic=-1 must reboot at once.
	exit 1
fi

if [ "$mode" = full ]; then
	check uart16550a sh -c 'dmesg | grep -q "ttyS0 at I/O 0x3f8 .* is a 16550A"'
	check smp sh -c '[ "$(grep -c ^processor /proc/cpuinfo)" = 2 ]'
	check virtio-blk-serial sh -c '[ "$(cat /sys/block/vda/serial)" = imagedisk ]'
	check ext4 sh -c 'mkdir -p /mnt/disk && mount -t ext4 /dev/vda /mnt/disk && grep -q "hello from ext4" /mnt/disk/hello.txt'
	check virtio-serial-port sh -c 'grep -qx vmctl.agent /sys/class/virtio-ports/vport*/name'
	check virtio-console sh -c '[ -c /dev/hvc0 ] && echo console-ok >/dev/hvc0'
	check virtio-net sh -c '[ -e /sys/class/net/eth0 ]'
	# What the agent does with a NIC: rename, MTU, address, up, default route.
	check ipv4-config sh -c '
		ip link set eth0 name vmnet0 && ip link set vmnet0 mtu 1400 &&
		ip addr add 10.200.0.2/24 dev vmnet0 && ip link set vmnet0 up &&
		ip route add default via 10.200.0.1 && ip route | grep -q "default via 10.200.0.1 dev vmnet0"'
	check ipv6 sh -c '
		ip link set lo up && grep -q "^0\{31\}1 " /proc/net/if_inet6 && ! [ -e /sys/class/net/sit0 ]'
	check af-packet sh -c '[ -e /proc/net/packet ]'
	check virtio-rng sh -c 'grep -q virtio_rng /sys/class/misc/hw_random/rng_current'
	check vsock-core sh -c '[ -c /dev/vsock ]'
	check devpts sh -c 'mkdir -p /dev/pts && mount -t devpts devpts /dev/pts && [ -c /dev/pts/ptmx ]'
	check overlay-tmpfs sh -c '
		mkdir -p /tmp/t && mount -t tmpfs tmpfs /tmp/t &&
		mkdir -p /tmp/t/lower /tmp/t/upper /tmp/t/work /tmp/t/merged &&
		echo lower >/tmp/t/lower/f &&
		mount -t overlay overlay -o lowerdir=/tmp/t/lower,upperdir=/tmp/t/upper,workdir=/tmp/t/work /tmp/t/merged &&
		grep -qx lower /tmp/t/merged/f && rm /tmp/t/merged/f && [ -c /tmp/t/upper/f ] && [ -f /tmp/t/lower/f ]'
	check overlay-ext4-upper sh -c '
		mkdir -p /mnt/disk/upper /mnt/disk/work /tmp/m &&
		mount -t overlay overlay -o lowerdir=/tmp/t/lower,upperdir=/mnt/disk/upper,workdir=/mnt/disk/work /tmp/m &&
		echo new >/tmp/m/g && rm /tmp/m/f && [ -c /mnt/disk/upper/f ] && grep -qx new /mnt/disk/upper/g'
	check cgroup2-controllers sh -c '
		mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup &&
		for c in cpuset cpu memory pids io; do grep -qw $c /sys/fs/cgroup/cgroup.controllers || exit 1; done &&
		echo "+cpuset +cpu +memory +pids +io" >/sys/fs/cgroup/cgroup.subtree_control &&
		mkdir /sys/fs/cgroup/box &&
		echo "50000 100000" >/sys/fs/cgroup/box/cpu.max && echo 0 >/sys/fs/cgroup/box/cpuset.cpus &&
		[ -f /sys/fs/cgroup/box/io.stat ]'
	check cgroup-oom-kill sh -c '
		mkdir /sys/fs/cgroup/oom && echo 8M >/sys/fs/cgroup/oom/memory.max &&
		sh -c "echo \$\$ >/sys/fs/cgroup/oom/cgroup.procs; x=\$(yes aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa | head -c 40000000); echo survived" >/dev/null 2>&1;
		status=$?; [ $status = 137 ] || { echo "exit status $status"; exit 1; };
		grep -q "^oom_kill [1-9]" /sys/fs/cgroup/oom/memory.events'
	check cgroup-pids sh -c '
		mkdir /sys/fs/cgroup/pids && echo 2 >/sys/fs/cgroup/pids/pids.max &&
		sh -c "echo \$\$ >/sys/fs/cgroup/pids/cgroup.procs; for i in 1 2 3; do sleep 1 & done; wait" >/dev/null 2>&1;
		grep -q "^max [1-9]" /sys/fs/cgroup/pids/pids.events'
	check namespaces sh -c '
		unshare -m -p -u -i -n -f sh -c "
			[ \$\$ = 1 ] && hostname inner && [ \$(hostname) = inner ] &&
			! grep -q eth0 /proc/net/dev && grep -q lo: /proc/net/dev" &&
		[ "$(hostname)" != inner ]'
	check user-namespace sh -c '[ "$(unshare -U -r id -u)" = 0 ]'
	case "$(cat /proc/cmdline)" in
	*tsc_early_khz=*)
		# Under TCG the PIT calibration is unreliable; with the TSC rate given, the TSC must be used.
		check clocksource-tsc sh -c 'grep -qE "^tsc(-early)?$" /sys/devices/system/clocksource/clocksource0/current_clocksource'
		;;
	esac
	check sysvipc sh -c '[ -e /proc/sysvipc/shm ] && [ -e /proc/sys/fs/mqueue/msg_max ]'
fi

echo "VMCTL-DONE"
# reboot=t and QEMU's -no-reboot turn this into a QEMU exit.
reboot -f
