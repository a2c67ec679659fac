//go:build linux

package hostcap

import (
	"os"
	"slices"
	"testing"
)

// TestDoctor: on a host that runs Lockstep's root tests, every check the
// runtime cannot do without passes, and the report's leaks are the ones
// the runtime measures.
func TestDoctor(t *testing.T) {
	if os.Getenv("LOCKSTEP_ROOT_TESTS") == "" || os.Getuid() != 0 {
		t.Skip("root test: make root-test")
	}
	r := Doctor(Options{Containers: true})
	for _, c := range r.Checks {
		t.Logf("%-16s ok=%-5v %s", c.Name, c.OK, c.Found)
		if !c.OK && (c.Need == Required || c.Name == "bpf") {
			t.Errorf("%s: %s (%s)", c.Name, c.Found, c.How)
		}
		if c.Found == "" || c.How == "" {
			t.Errorf("%s: says neither what it found nor how", c.Name)
		}
	}
	leaks, err := Leaks()
	if err != nil || !slices.Equal(leaks, r.Leaks) {
		t.Errorf("doctor's leaks %v, the runtime's %v (%v)", r.Leaks, leaks, err)
	}
}
