#!/bin/busybox sh
# Prints the nondeterminism sources busybox applets reach. Run with
# busybox sh so that every command is a busybox applet.
b=/bin/busybox
echo "date $($b date +%s.%N) $($b date)"
echo "urandom $($b od -An -tx1 -N16 /dev/urandom | $b tr -d ' ')"
echo "uname $($b uname -a)"
echo "hostname $($b hostname)"
echo "nproc $($b nproc)"
echo "cpuinfo $($b grep -m1 'model name' /proc/cpuinfo)"
echo "meminfo $($b grep MemTotal /proc/meminfo)"
echo "uptime $($b cat /proc/uptime)"
echo "pid $$"
d=${1:-/tmp/lockstep-busybox-dir}
$b mkdir -p "$d"
for i in 5 3 9 1 7 2 8 0 6 4; do echo x > "$d/b$i"; done
echo "ls $($b ls -i "$d" | $b tr '\n' ' ')"
echo "ls_full $($b ls -l --full-time "$d/b3" 2>/dev/null || $b ls -le "$d/b3")"
echo "df $($b df / | $b tail -1)"
echo "mktemp $($b mktemp -u)"
echo "sleep $($b sleep 0.1; $b date +%s.%N)"
