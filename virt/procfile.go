package virt

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ProcFile names a process's own file in procfs that Lockstep rewrites:
// /proc/PID/{stat,statm,status,mounts,mountinfo,maps,smaps,smaps_rollup,io,
// sched,schedstat}, the same under
// /proc/PID/task/TID, their self and thread-self forms, and /proc/mounts.
type ProcFile struct {
	PID  string // "self", "thread-self" or a PID in the caller's namespace
	TID  string // the TID of a /task/TID path, or ""
	Name string // "stat", "status", "maps", "io", "sched", ...: ProcFileNames
}

var procFileRE = regexp.MustCompile(`^/proc/(self|thread-self|[1-9][0-9]*)(?:/task/([1-9][0-9]*))?/(stat|statm|status|mounts|mountinfo|maps|smaps|smaps_rollup|io|sched|schedstat)$`)

// ParseProcFile reports whether path names a ProcFile.
func ParseProcFile(path string) (ProcFile, bool) {
	if path == "/proc/mounts" { // a link to self/mounts
		return ProcFile{PID: "self", Name: "mounts"}, true
	}
	m := procFileRE.FindStringSubmatch(path)
	if m == nil || (m[1] == "thread-self" && m[2] != "") || (m[1] == "self" && m[2] != "") {
		return ProcFile{}, false
	}
	return ProcFile{PID: m[1], TID: m[2], Name: m[3]}, true
}

// ProcFileNames are the last elements of every ProcFile path.
var ProcFileNames = []string{"stat", "statm", "status", "mounts", "mountinfo", "maps", "smaps", "smaps_rollup", "io", "sched", "schedstat"}

// userHZ is the unit of the times in /proc/PID/stat (USER_HZ on x86_64).
const userHZ = 100

// ProcFile rewrites the contents b of a process's stat, statm, status,
// mounts, mountinfo, maps, smaps, smaps_rollup, io, sched or schedstat
// file (read from the caller's procfs) so that what
// the host's scheduler, memory, clocks and storage put there does not
// show:
//
//   - stat and status: a process reading its own file is running, one
//     the tracer holds sleeping;
//   - stat: the start time is the process's virtual start (its monotonic
//     clock when it was forked, so ps shows START and ELAPSED from the
//     virtual boot time of /proc/stat and the virtual /proc/uptime); page
//     faults, CPU times, the resident set, the last CPU, I/O delay and
//     guest times are 0, as times() and getrusage() report;
//   - statm: the resident and shared page counts are 0;
//   - status: the resident sizes and page tables are 0, context switches
//     0, the queued-signal count 0, the CPUs and memory nodes allowed
//     those of the world, the speculation and THP lines fixed;
//   - mounts and mountinfo: see procMountinfo;
//   - maps, smaps and smaps_rollup: a mapped file's device and inode are
//     the virtual ones stat reports; the resident, shared, dirty and
//     swapped sizes are 0 (the mappings' sizes and page sizes stay);
//   - io: the bytes read from and written to storage are 0 (what the page
//     cache held); the bytes and calls of read and write stay;
//   - sched and schedstat: every scheduler statistic is 0.
//
// nspid is the process's PID in the caller's namespace, host its host
// thread group ID when the caller reads its own file (else 0). Sizes of
// the address space (VmSize, VmData, ...) are the program's own and stay,
// but for a process that is not the run's (`lockstep exec`'s init, a Go
// program whose threads and arenas vary): it shows no memory and one
// thread.
func (w *World) ProcFile(name string, nspid, host int32, b []byte) ([]byte, error) {
	switch name {
	case "stat", "statm", "status":
		start, ours := w.pr.startOf(nspid, host)
		return w.procStatus(name, b, start, host != 0, ours)
	case "mounts":
		return procMounts(b), nil
	case "mountinfo":
		return w.procMountinfo(b)
	case "maps", "smaps", "smaps_rollup":
		return w.procMaps(b)
	case "io":
		return procIO(b), nil
	case "sched":
		return procSched(b), nil
	case "schedstat":
		return []byte("0 0 0\n"), nil
	}
	return nil, fmt.Errorf("no procfs file %q", name)
}

// procStatus rewrites a process's stat, statm or status file; start is
// its virtual start, self whether it reads its own file, ours whether it
// is the run's.
func (w *World) procStatus(name string, b []byte, start time.Duration, self, ours bool) ([]byte, error) {
	switch name {
	case "stat":
		return procStat(b, start, self, ours)
	case "statm":
		f := strings.Fields(string(b))
		if len(f) != 7 {
			return nil, fmt.Errorf("statm: %d fields, want 7", len(f))
		}
		f[1], f[2] = "0", "0"
		if !ours {
			f = []string{"0", "0", "0", "0", "0", "0", "0"}
		}
		return []byte(strings.Join(f, " ") + "\n"), nil
	}
	return eachLine(b, func(line string) string {
		key, val, ok := strings.Cut(strings.TrimSuffix(line, "\n"), ":")
		if !ok {
			return line
		}
		switch key {
		case "State":
			if st := strings.Fields(val); len(st) > 0 {
				if s := state(st[0], self, ours); s != st[0] {
					val = "\t" + stateNames[s] // state only changes to R or S
				}
			}
		case "VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem", "VmPTE":
			val = zeroKB
		case "VmPeak", "VmSize", "VmData", "VmStk", "VmExe", "VmLib":
			if !ours {
				val = zeroKB
			}
		case "Threads":
			if !ours {
				val = "\t1"
			}
		case "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches":
			val = "\t0"
		case "SigQ":
			if _, limit, ok := strings.Cut(val, "/"); ok {
				val = "\t0/" + limit
			}
		case "Cpus_allowed":
			val = "\t" + cpuMask(w.cfg.CPUs)
		case "Cpus_allowed_list":
			val = "\t" + strings.TrimSuffix(w.cpuList(), "\n")
		case "Mems_allowed":
			val = "\t1"
		case "Mems_allowed_list":
			val = "\t0"
		case "Speculation_Store_Bypass":
			val = "\tthread vulnerable"
		case "SpeculationIndirectBranch":
			val = "\tconditional enabled"
		case "THP_enabled":
			val = "\t1"
		}
		return key + ":" + val + "\n"
	}), nil
}

// zeroKB is a status file's size of 0.
const zeroKB = "\t       0 kB"

// procStat rewrites a stat line. Its second field, the command name in
// parentheses, may hold spaces and parentheses: fields are counted from
// the last ')'.
func procStat(b []byte, start time.Duration, self, ours bool) ([]byte, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return nil, fmt.Errorf("stat: no command name in %q", b)
	}
	f := strings.Fields(string(b[i+2:])) // f[0] is field 3, the state
	const first = 3
	if len(f) < 44-first+1 {
		return nil, fmt.Errorf("stat: %d fields, want at least 44", len(f)+2)
	}
	f[0] = state(f[0], self, ours)
	for _, k := range []int{10, 11, 12, 13, 14, 15, 16, 17, 24, 39, 42, 43, 44} {
		f[k-first] = "0"
	}
	if !ours { // Lockstep's own init: a Go runtime's threads and arenas
		f[20-first], f[23-first] = "1", "0"
	}
	f[22-first] = strconv.FormatInt(int64(start/(time.Second/userHZ)), 10)
	out := append([]byte{}, b[:i+2]...)
	return append(append(out, strings.Join(f, " ")...), '\n'), nil
}

// state is the state letter a process shows: running when it reads its
// own file (it waits for the agent meanwhile), and sleeping where the
// tracer holds it (every process of the run has Lockstep's tracer, so no
// other tracer can stop one) or where it is not the run's (Lockstep's
// init waits for the command; its Go runtime's threads wake when the
// host's timing has them, and showed R on a busy host).
func state(s string, self, ours bool) string {
	switch {
	case self:
		return "R"
	case s == "t" || !ours:
		return "S"
	}
	return s
}

var stateNames = map[string]string{"R": "R (running)", "S": "S (sleeping)"}

// eachLine rewrites b a line at a time: f gets each line with its newline
// and returns what takes its place ("" leaves it out).
func eachLine(b []byte, f func(line string) string) []byte {
	var out bytes.Buffer
	for _, line := range strings.SplitAfter(string(b), "\n") {
		if line != "" {
			out.WriteString(f(line))
		}
	}
	return out.Bytes()
}

// cpuMask writes a mask of the first n CPUs as the kernel writes a cpumask
// of n CPUs: hex, a comma between 32-bit words.
func cpuMask(n int) string {
	top := n - 32*((n-1)/32) // the CPUs in the highest word
	s := strconv.FormatUint(uint64(1)<<top-1, 16)
	for range (n - 1) / 32 {
		s += ",ffffffff"
	}
	return s
}

// Mount table rewriting. A container's mount table shows the host: its
// root is an overlay of snapshot directories whose paths hold the
// snapshotter's root and snapshot numbers (a new one for every run), bind
// mounts name the host device and the host path they come from, and
// mount IDs, device numbers and peer groups are the host's counters.
const (
	rootDevice   = "/dev/root" // what the kernel calls a device it cannot name
	firstMountID = 20
)

// OwnDir is where the shim mounts Lockstep's own directory in a container
// (its sockets and the exec helper). Its mounts are left out of mount
// tables: they are bind mounts of host paths, on whatever filesystem the
// host has there.
const OwnDir = "/.lockstep"

func ownMount(mountPoint string) bool {
	return mountPoint == OwnDir || strings.HasPrefix(mountPoint, OwnDir+"/")
}

// mountSource hides a host device's name.
func mountSource(s string) string {
	if strings.HasPrefix(s, "/") {
		return rootDevice
	}
	return s
}

// mountOptions drops options whose value is a host path (overlay's
// lowerdir, upperdir and workdir).
func mountOptions(opts string) string {
	var keep []string
	for _, o := range strings.Split(opts, ",") {
		if _, v, ok := strings.Cut(o, "="); ok && strings.Contains(v, "/") {
			continue
		}
		keep = append(keep, o)
	}
	return strings.Join(keep, ",")
}

// procMounts rewrites /proc/PID/mounts: "SOURCE TARGET TYPE OPTIONS 0 0".
func procMounts(b []byte) []byte {
	return eachLine(b, func(line string) string {
		f := strings.Fields(line)
		switch {
		case len(f) < 4:
			return line
		case ownMount(f[1]):
			return ""
		}
		f[0], f[3] = mountSource(f[0]), mountOptions(f[3])
		return strings.Join(f, " ") + "\n"
	})
}

// procMountinfo rewrites /proc/PID/mountinfo ("ID PARENT MAJ:MIN ROOT
// MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPEROPTIONS", proc(5)):
// mount IDs are numbered in the file's order from 20 (a parent outside
// the table, the root's, is 19), device numbers are the virtual ones that
// stat reports, peer groups are numbered in order of appearance, a device
// is /dev/root, a bind mount of a host device's directory shows its mount
// point as its root, options naming host paths are dropped, and
// Lockstep's own mounts (OwnDir) are left out.
func (w *World) procMountinfo(b []byte) ([]byte, error) {
	var mounts [][]string
	ids := map[string]int{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if sep := slices.Index(f, "-"); sep < 6 || len(f) < sep+4 {
			return nil, fmt.Errorf("mountinfo: malformed line %q", line)
		}
		if !ownMount(f[4]) {
			ids[f[0]] = firstMountID + len(mounts)
			mounts = append(mounts, f)
		}
	}
	groups := map[string]int{}
	var out bytes.Buffer
	for _, f := range mounts {
		sep := slices.Index(f, "-")
		var maj, min uint64
		if _, err := fmt.Sscanf(f[2], "%d:%d", &maj, &min); err != nil {
			return nil, fmt.Errorf("mountinfo: device %q: %v", f[2], err)
		}
		parent, ok := ids[f[1]]
		if !ok {
			parent = firstMountID - 1
		}
		vdev := w.Dev(Mkdev(uint32(maj), uint32(min)))
		f[0], f[1], f[2] = strconv.Itoa(ids[f[0]]), strconv.Itoa(parent), fmt.Sprintf("%d:%d", Major(vdev), Minor(vdev))
		for i := 6; i < sep; i++ { // shared:N, master:N, propagate_from:N
			if tag, n, ok := strings.Cut(f[i], ":"); ok {
				if _, seen := groups[n]; !seen {
					groups[n] = len(groups) + 1
				}
				f[i] = tag + ":" + strconv.Itoa(groups[n])
			}
		}
		if strings.HasPrefix(f[sep+2], "/") {
			f[3] = f[4]
		}
		f[sep+2], f[sep+3] = mountSource(f[sep+2]), mountOptions(f[sep+3])
		out.WriteString(strings.Join(f, " ") + "\n")
	}
	return out.Bytes(), nil
}

// procMaps rewrites /proc/PID/maps ("ADDRESS PERMS OFFSET MAJ:MIN INODE
// [PATH]"), and smaps and smaps_rollup, which follow each such line with
// "Key: N kB" lines: a mapped file's device and inode numbers become the
// ones stat reports (the path stays at column 74, as the kernel pads it),
// and every size but a mapping's own and its page sizes becomes 0.
func (w *World) procMaps(b []byte) ([]byte, error) {
	var err error
	out := eachLine(b, func(line string) string {
		if key, val, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(val, " kB\n") && !strings.Contains(key, " ") {
			switch key {
			case "Size", "KernelPageSize", "MMUPageSize":
				return line
			}
			return fmt.Sprintf("%-16s%8d kB\n", key+":", 0)
		}
		f := strings.SplitN(line, " ", 6) // the path may hold spaces
		if len(f) < 6 || !strings.Contains(f[0], "-") {
			return line // VmFlags, THPeligible, ...
		}
		var maj, min uint32
		ino, err1 := strconv.ParseUint(f[4], 10, 64)
		if _, err2 := fmt.Sscanf(f[3], "%x:%x", &maj, &min); err1 != nil || err2 != nil {
			err = fmt.Errorf("maps: malformed line %q", line)
			return line
		}
		if ino != 0 {
			dev := Mkdev(maj, min)
			vdev := w.Dev(dev)
			f[3] = fmt.Sprintf("%02x:%02x", Major(vdev), Minor(vdev))
			f[4] = strconv.FormatUint(w.Ino(dev, ino), 10)
		}
		head := strings.Join(f[:5], " ")
		if path := strings.TrimLeft(f[5], " "); path != "\n" && path != "" {
			return fmt.Sprintf("%-72s %s", head, path)
		}
		return head + " " + f[5]
	})
	return out, err
}

// procIO zeroes the storage traffic in /proc/PID/io.
func procIO(b []byte) []byte {
	return eachLine(b, func(line string) string {
		switch key, _, _ := strings.Cut(line, ":"); key {
		case "read_bytes", "write_bytes", "cancelled_write_bytes":
			return key + ": 0\n"
		}
		return line
	})
}

// procSched zeroes the values of /proc/PID/sched ("name : value" lines
// under a header), keeping the kernel's column widths.
func procSched(b []byte) []byte {
	return eachLine(b, func(line string) string {
		key, val, ok := strings.Cut(line, ":")
		if !ok || !strings.HasSuffix(key, " ") || strings.TrimSpace(val) == "" {
			return line
		}
		v := strings.TrimRight(val, "\n")
		return key + ":" + fmt.Sprintf("%*s", len(v), "0") + "\n"
	})
}
