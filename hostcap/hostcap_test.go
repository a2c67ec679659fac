package hostcap

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestParseRequire(t *testing.T) {
	for in, want := range map[string]string{"": "", "rdtsc": "rdtsc", "cpuid, rdtsc,rdtsc": "rdtsc cpuid", "all": "rdtsc cpuid"} {
		got, err := ParseRequire(in)
		if err != nil || strings.Join(got, " ") != want {
			t.Errorf("ParseRequire(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseRequire("rdtsc,clock"); err == nil || !strings.Contains(err.Error(), `"clock"`) {
		t.Errorf("an unknown source: %v", err)
	}
}

func TestRequire(t *testing.T) {
	if err := Require([]string{Rdtsc}, []string{CPUID}); err != nil {
		t.Errorf("rdtsc required, cpuid leaks: %v", err)
	}
	err := Require([]string{Rdtsc, CPUID}, []string{Rdtsc})
	if !errors.Is(err, ErrRequired) || !strings.Contains(err.Error(), "rdtsc (rdtsc runs untrapped") || strings.Contains(err.Error(), "cpuid (") {
		t.Errorf("rdtsc and cpuid required, rdtsc leaks: %v", err)
	}
	if w := Warning(nil); w != "" {
		t.Errorf("warning with no leaks: %q", w)
	}
	if w := Warning([]string{Rdtsc, CPUID}); !strings.Contains(w, "rdtsc and cpuid") || !strings.Contains(w, "--require rdtsc,cpuid") {
		t.Errorf("warning: %q", w)
	}
}

// gccRun builds a C program and runs it: how a C program on this host
// fares, measured apart from the probe programs.
func gccRun(t *testing.T, src string) (exit int, sig syscall.Signal) {
	t.Helper()
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("no gcc to build the C check with")
	}
	dir := t.TempDir()
	c, bin := filepath.Join(dir, "p.c"), filepath.Join(dir, "p")
	os.WriteFile(c, []byte(src), 0o644)
	if out, err := exec.Command("gcc", "-O1", "-o", bin, c).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	err := exec.Command(bin).Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if err == nil {
		return 0, 0
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 0, ws.Signal()
	}
	return ws.ExitStatus(), 0
}

// TestProbesAgreeWithC: the measurements agree with C programs doing the
// same, on whatever host this is.
func TestProbesAgreeWithC(t *testing.T) {
	traps, found, err := rdtscTraps()
	if err != nil {
		t.Fatal(err)
	}
	_, sig := gccRun(t, `#include <sys/prctl.h>
#include <x86intrin.h>
int main(void) { if (prctl(PR_SET_TSC, PR_TSC_SIGSEGV, 0, 0, 0)) return 3; return (int)(__rdtsc() & 0); }`)
	if traps != (sig == syscall.SIGSEGV) {
		t.Errorf("rdtsc: the probe says traps=%v (%s), a C program got signal %v", traps, found, sig)
	}
	faults, found, err := cpuidFaults()
	if err != nil {
		t.Fatal(err)
	}
	exit, sig := gccRun(t, `#include <unistd.h>
#include <sys/syscall.h>
#include <cpuid.h>
int main(void) { unsigned a, b, c, d;
if (syscall(SYS_arch_prctl, 0x1012, 0)) return 3;
__cpuid(0, a, b, c, d); return (int)(a & 0); }`)
	if faults != (sig == syscall.SIGSEGV) || !faults && exit != 3 && !strings.Contains(found, "untrapped") {
		t.Errorf("cpuid: the probe says faults=%v (%s), a C program got exit %d signal %v", faults, found, exit, sig)
	}
	leaks, err := Leaks()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(strings.Join(leaks, " "), Rdtsc) == traps || strings.Contains(strings.Join(leaks, " "), CPUID) == faults {
		t.Errorf("Leaks() = %v, with rdtsc traps=%v and cpuid faults=%v", leaks, traps, faults)
	}
	t.Logf("this host: rdtsc %s; cpuid %s; leaks %v", map[bool]string{true: "traps", false: "does not trap"}[traps], found, leaks)
}

// TestABIProbes: the i386 and x32 probes end one of the two ways they can.
func TestABIProbes(t *testing.T) {
	if o, err := run(progTrue, nil); err != nil || o != (outcome{}) {
		t.Fatalf("the smallest program: %v, %v", o, err)
	}
	if o, err := run(progInt80, nil); err != nil || o != (outcome{}) && o.signal != syscall.SIGSEGV {
		t.Errorf("int $0x80: %v, %v; want exit 0 (emulation) or SIGSEGV (none)", o, err)
	}
	if o, err := run(progX32, nil); err != nil || o.signal != 0 || o.exit > 1 {
		t.Errorf("x32 getpid: %v, %v; want exit 0 (x32) or 1 (ENOSYS)", o, err)
	}
}
