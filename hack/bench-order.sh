#!/usr/bin/env bash
# The cost of ordering processes that wake each other (docs/determinism.md,
# "Processes racing on a shared output"), measured in the same run: each
# workload runs natively, under `lockstep exec --unordered-wakes` (before:
# no wake-up watch) and under `lockstep exec` (after), in turn, REPS times;
# the medians of the wall times are compared.
#   - a parallel build: 20 C files compiled by make -j2;
#   - xargs -P 4: 40 small jobs (sha256sum of 256 KiB each) over 4 workers;
#   - a shell pipeline of 5 stages streaming 64 MiB, and one of 5 stages
#     passing 20,000 lines.
# The floor under each hold is printed last: one bare ptrace stop and
# resume (hack/bench/stoprt.c). The 64 MiB pipeline makes ~7,000 holds.
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${REPS:-5}
lockstep=${LOCKSTEP:-bin/lockstep}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The build: 20 C files of some weight, and a Makefile.
mkdir -p "$work/build"
for i in $(seq 1 20); do
	{
		echo "#include <stdio.h>"
		for f in $(seq 1 40); do
			echo "static int f$f(int x) { int s = 0; for (int i = 0; i < x; i++) s += i * $f ^ (s >> 3); return s; }"
		done
		echo "int unit$i(int x) { return 0"
		for f in $(seq 1 40); do echo " + f$f(x)"; done
		echo "; }"
	} > "$work/build/u$i.c"
done
{
	echo "OBJS = $(for i in $(seq 1 20); do printf 'u%d.o ' "$i"; done)"
	echo "all: \$(OBJS)"
	printf '%%.o: %%.c\n\tgcc -O2 -c -o $@ $<\n'
	printf 'clean:\n\trm -f *.o\n'
} > "$work/build/Makefile"
build="make -s -C $work/build clean && make -s -j2 -C $work/build"
head -c $((40 * 262144)) /dev/zero | split -b 262144 - "$work/chunk."
xargs_cmd="ls $work/chunk.* | xargs -P 4 -n 1 sha256sum | wc -l"
stream="head -c 67108864 /dev/zero | cat | cat | cat | wc -c"
lines="seq 1 20000 | cat | sort -n | uniq | wc -l"

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# three CMD: runs it natively, unordered and ordered under lockstep, in
# turn, REPS times; prints the three medians in ns.
three() {
	local n=() u=() o=() t0
	for _ in $(seq "$REPS"); do
		t0=$(now); sh -c "$1" >/dev/null; n+=($(( $(now) - t0 )))
		t0=$(now); "$lockstep" exec --unordered-wakes -- /bin/sh -c "$1" >/dev/null; u+=($(( $(now) - t0 )))
		t0=$(now); "$lockstep" exec -- /bin/sh -c "$1" >/dev/null; o+=($(( $(now) - t0 )))
	done
	echo "$(printf '%s\n' "${n[@]}" | median) $(printf '%s\n' "${u[@]}" | median) $(printf '%s\n' "${o[@]}" | median)"
}

ms() { echo "$1/1000000" | bc -l; }
printf '%-36s %10s %12s %12s %14s\n' workload native_ms before_ms after_ms after/before
for w in "make -j2, 20 C files|$build" "xargs -P 4, 40 sha256sum|$xargs_cmd" \
	"5-stage pipeline, 64 MiB|$stream" "5-stage pipeline, 20000 lines|$lines"; do
	name=${w%%|*}
	read -r n u o < <(three "${w#*|}")
	printf '%-36s %10.1f %12.1f %12.1f %14.2f\n' "$name" "$(ms "$n")" "$(ms "$u")" "$(ms "$o")" "$(echo "$o/$u" | bc -l)"
done
gcc -O2 -o "$work/stoprt" hack/bench/stoprt.c
echo "floor: one ptrace stop and resume, $(echo "$("$work/stoprt")/1000" | bc -l | xargs printf '%.1f') µs"
