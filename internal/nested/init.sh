#!/bin/busybox sh
# /init of the nested harness's L1 machine (see internal/nested). It loads
# KVM, runs each scenario of /nested/plan in its own session under a time
# limit, reports on the console and powers off. The protocol lines, one per
# line, are parsed by protocol.go:
#
#   NESTED-BOOT uptime=<s>
#   NESTED-BEGIN name=<scenario> uptime=<s>
#   NESTED-RESULT name=<scenario> status=pass|fail start=<s> end=<s> detail=<text to end of line>
#   NESTED-DONE uptime=<s>
#   NESTED-TIMEOUT uptime=<s>
#   NESTED-ALIVE uptime=<s>      (every 5 s: L1 still runs)
#
# Times are L1's /proc/uptime. The first result is always l1-kvm.

/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/nested/bin:/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run

up() { read -r u _ </proc/uptime; echo "$u"; }
oneline() { tr '\r\n\t' '   ' | cut -c1-300; }
result() { echo "NESTED-RESULT name=$1 status=$2 start=$3 end=$(up) detail=$4"; }

# NESTED_DEADLINE (seconds), NESTED_MODULES (load order) and
# NESTED_SCENARIOS ("name:seconds ...") are written by the host.
. /nested/plan
echo "NESTED-BOOT uptime=$(up)"

# A heartbeat: under TCG's emulated SVM, L1 can wedge so that it never runs
# again and prints nothing; the host notices the silence (see run.go).
(
	while :; do
		echo "NESTED-ALIVE uptime=$(up)"
		sleep 5
	done
) &
echo $! >/run/nested-heartbeat.pid

# The host kills QEMU on its own deadline; this one also ends a machine whose
# host process died and left QEMU behind.
(
	sleep "$NESTED_DEADLINE"
	echo "NESTED-TIMEOUT uptime=$(up)"
	poweroff -f
) &

start=$(up)
kvm_ok=1
detail=
for m in $NESTED_MODULES; do
	if ! out=$(insmod "/nested/modules/$m.ko" 2>&1); then
		kvm_ok=
		detail="insmod $m: $(echo "$out" | oneline)"
		break
	fi
done
if [ -n "$kvm_ok" ] && [ ! -c /dev/kvm ]; then
	kvm_ok=
	detail="modules loaded but /dev/kvm did not appear"
fi
if [ -n "$kvm_ok" ]; then
	p=/sys/module/kvm_amd/parameters
	result l1-kvm pass "$start" "/dev/kvm ready: kvm_amd npt=$(cat $p/npt 2>/dev/null) nested=$(cat $p/nested 2>/dev/null)"
else
	result l1-kvm fail "$start" "$detail"
fi

for spec in $NESTED_SCENARIOS; do
	name=${spec%%:*}
	limit=${spec#*:}
	if [ -z "$kvm_ok" ]; then
		result "$name" fail "$(up)" "not run: L1 has no working /dev/kvm"
		continue
	fi
	echo "NESTED-BEGIN name=$name uptime=$(up)"
	start=$(up)
	rm -f /tmp/scenario.rc /tmp/scenario.log
	# A session of its own, so that the time limit kills everything the
	# scenario started (a hung VMM included), not only its shell.
	setsid sh -c "cd /nested && { sh /nested/scenarios/$name.sh 2>&1 </dev/null; echo \$? >/tmp/scenario.rc; } | tee /tmp/scenario.log" &
	pid=$!
	(
		sleep "$limit"
		kill -KILL -- "-$pid"
	) 2>/dev/null &
	killer=$!
	wait "$pid"
	kill "$killer" 2>/dev/null
	last=$(grep -v '^[[:space:]]*$' /tmp/scenario.log 2>/dev/null | tail -n1 | oneline)
	if [ ! -f /tmp/scenario.rc ]; then
		result "$name" fail "$start" "timed out after ${limit}s; last output: $last"
	elif rc=$(cat /tmp/scenario.rc) && [ "$rc" = 0 ]; then
		result "$name" pass "$start" "$last"
	else
		result "$name" fail "$start" "exit status $rc: $last"
	fi
done

echo "NESTED-DONE uptime=$(up)"
poweroff -f
# poweroff -f does not return; if it ever does, PID 1 exiting panics the
# kernel, and panic=-1 with QEMU's -no-reboot ends the machine.
