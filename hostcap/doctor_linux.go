//go:build linux

package hostcap

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Doctor measures every capability the runtime depends on.
func Doctor(o Options) Report {
	info := cpuinfo()
	r := Report{CPU: info["model name"], Kernel: kernel(), Leaks: []string{}, Missing: []string{}}
	add := func(c Check) {
		r.Checks = append(r.Checks, c)
		switch {
		case c.OK:
		case c.Need == Determinism:
			r.Leaks = append(r.Leaks, c.Source)
		case c.Need == Required, c.Need == Containers && o.Containers:
			r.Missing = append(r.Missing, c.Name)
		}
	}
	add(kernelCheck())
	add(instructionCheck("rdtsc-trap", Rdtsc, rdtscTraps,
		"a child sets prctl(PR_SET_TSC, PR_TSC_SIGSEGV) and runs rdtsc",
		"use a host whose rdtsc traps (Intel VMs seen so far do; paravirtualised AMD EPYC VMs do not), or accept the leak"))
	add(instructionCheck("cpuid-fault", CPUID, cpuidFaults,
		"a child arms arch_prctl(ARCH_SET_CPUID, 0) and runs cpuid",
		"use a host with CPUID faulting (cpuid_fault), or accept the leak"))
	add(rdrandCheck(strings.Fields(info["flags"])))
	add(abiCheck("ia32-emulation", progInt80, "killed by SIGSEGV", "a child makes the i386 getpid with int $0x80",
		"int $0x80 kills the caller with SIGSEGV instead of ENOSYS (the filter denies it where emulation is on): safe, but a program that tries it ends differently than on a host with emulation"))
	add(abiCheck("x32-abi", progX32, "the call returned ENOSYS", "a child makes the x32 getpid (syscall number | 0x40000000)",
		"x32 calls fail with ENOSYS, as the filter makes them where the ABI is on"))
	add(seccompCheck())
	add(ptraceCheck())
	add(namespaceCheck("namespaces", unix.CLONE_NEWPID|unix.CLONE_NEWNS|unix.CLONE_NEWUTS|unix.CLONE_NEWIPC|unix.CLONE_NEWCGROUP|unix.CLONE_NEWNET, Required,
		"lockstep exec and the shim give every run PID, mount, UTS, IPC, cgroup and network namespaces", "run as root (CAP_SYS_ADMIN)"))
	add(namespaceCheck("user-namespace", unix.CLONE_NEWUSER, Info,
		"not used: runs are root's; rootless runs would need it", "sysctl kernel.unprivileged_userns_clone=1 or user.max_user_namespaces > 0"))
	add(cgroupCheck())
	add(bpfCheck())
	add(branchCounterCheck())
	add(versionCheck("runc", []string{"runc", "--version"}, "apt-get install runc"))
	add(versionCheck("containerd", []string{"containerd", "--version"}, "apt-get install containerd"))
	return r
}

func instructionCheck(name, source string, probe func() (bool, string, error), how, fix string) Check {
	c := Check{Name: name, Need: Determinism, Source: source, How: how, Without: consequence[source], Fix: fix}
	ok, found, err := probe()
	c.OK, c.Found = ok, found
	if err != nil {
		c.Found = err.Error()
	}
	return c
}

func abiCheck(name string, p program, off, how, without string) Check {
	c := Check{Name: name, Need: Info, How: how, Without: without}
	o, err := run(p, nil)
	switch {
	case err != nil:
		c.Found = err.Error()
	case o.exit == 0 && o.signal == 0:
		c.OK, c.Found = true, "on"
	default:
		c.Found = "off: " + off
		if o.signal == 0 && o.exit != 1 || o.signal != 0 && o.signal != syscall.SIGSEGV {
			c.Found = "off: the probe was " + o.String()
		}
	}
	return c
}

func rdrandCheck(flags []string) Check {
	c := Check{Name: "rdrand", Need: Info, How: "the rdrand and rdseed flags in /proc/cpuinfo"}
	var has []string
	for _, f := range []string{"rdrand", "rdseed"} {
		if slices.Contains(flags, f) {
			has = append(has, f)
		}
	}
	c.OK = true
	if len(has) == 0 {
		c.Found = "not advertised"
		return c
	}
	c.Found = strings.Join(has, " and ") + " advertised: hidden from cpuid only where cpuid faults; glibc, Go, Python and OpenSSL do not seed from them"
	return c
}

func kernelCheck() Check {
	c := Check{Name: "kernel", Need: Required, How: "uname(2)", Found: kernel(),
		Without: "PIDFD_THREAD and synchronous seccomp wake-ups are missing before Linux 6.9", Fix: "boot Linux 6.9 or later"}
	var maj, min int
	fmt.Sscanf(c.Found, "%d.%d", &maj, &min)
	c.OK = maj > 6 || maj == 6 && min >= 9
	return c
}

func namespaceCheck(name string, flags uintptr, need Need, without, fix string) Check {
	c := Check{Name: name, Need: need, How: fmt.Sprintf("a child is started in new namespaces (clone flags %#x)", flags), Without: without, Fix: fix}
	o, err := run(progTrue, &syscall.SysProcAttr{Cloneflags: flags})
	switch {
	case err != nil:
		c.Found = err.Error()
	case o.exit != 0 || o.signal != 0:
		c.Found = o.String()
	default:
		c.OK, c.Found = true, "created"
	}
	return c
}

func cgroupCheck() Check {
	c := Check{Name: "cgroup-v2", Need: Info, How: "statfs(/sys/fs/cgroup)",
		Without: "runc uses cgroup v1 or the hybrid hierarchy; every run's cgroup namespace shows / in either"}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		c.Found = err.Error()
		return c
	}
	c.OK = st.Type == unix.CGROUP2_SUPER_MAGIC
	c.Found = map[bool]string{true: "cgroup2 mounted", false: "cgroup v1 or hybrid (no cgroup2 at /sys/fs/cgroup)"}[c.OK]
	return c
}

func versionCheck(name string, argv []string, fix string) Check {
	c := Check{Name: name, Need: Containers, How: strings.Join(argv, " "),
		Without: "lockstep run, pipe, provider and the shim need " + name + "; lockstep exec does not", Fix: fix}
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		c.Found = err.Error()
		return c
	}
	c.OK, c.Found = true, strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	return c
}

func kernel() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// cpuinfo reads the first CPU's fields from /proc/cpuinfo.
func cpuinfo() map[string]string {
	m := map[string]string{}
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return m
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() && s.Text() != "" {
		k, v, _ := strings.Cut(s.Text(), ":")
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return m
}
