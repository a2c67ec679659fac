//go:build linux

package runner_test

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// TestEmulatedAgreeWithKernel runs programs that call emulated syscalls
// with tables of arguments, valid and not, natively and under Lockstep:
// what each call returns must be the kernel's (the values may differ, the
// results and errors not).
func TestEmulatedAgreeWithKernel(t *testing.T) {
	requireRoot(t)
	for _, probe := range []string{"getrandom", "emulated"} {
		prog := filepath.Join(bin.probes, probe)
		native, err := exec.Command(prog).Output()
		if err != nil {
			t.Fatalf("%s natively: %v", probe, err)
		}
		r := lockstep(t, "", "exec", "--", prog)
		if r.code != 0 || r.stdout != string(native) {
			t.Errorf("%s: exit %d, under lockstep:\n%s\nnatively:\n%s", probe, r.code, r.stdout, native)
		}
	}
}
