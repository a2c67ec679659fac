//go:build linux

package tracer

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
)

// ownVDSO reads this process's vDSO image and base address.
func ownVDSO(t *testing.T) ([]byte, uint64) {
	t.Helper()
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(maps), "\n") {
		if !strings.HasSuffix(line, "[vdso]") {
			continue
		}
		r := strings.SplitN(strings.Fields(line)[0], "-", 2)
		lo, _ := strconv.ParseUint(r[0], 16, 64)
		hi, _ := strconv.ParseUint(r[1], 16, 64)
		f, err := os.Open("/proc/self/mem")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		img := make([]byte, hi-lo)
		if _, err := f.ReadAt(img, int64(lo)); err != nil {
			t.Fatal(err)
		}
		return img, lo
	}
	t.Fatal("no [vdso] mapping in /proc/self/maps")
	return nil, 0
}

func TestPlanVDSO(t *testing.T) {
	img, base := ownVDSO(t)
	patches, err := PlanVDSO(img, base)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time", "__vdso_clock_getres", "__vdso_getcpu"} {
		if !hasSymbol(patches, want) {
			t.Errorf("no patch for %s", want)
		}
	}
	for _, p := range patches {
		if p.Addr < base || p.Addr >= base+uint64(len(img)) {
			t.Errorf("%s at %#x is outside the vDSO [%#x, +%d)", p.Symbol, p.Addr, base, len(img))
		}
		if !bytes.Equal(p.Code[5:], []byte{0x0f, 0x05, 0xc3}) || p.Code[0] != 0xb8 {
			t.Errorf("%s: stub %x is not mov eax,imm32; syscall; ret", p.Symbol, p.Code)
		}
	}
}

func TestPlanVDSORejectsGarbage(t *testing.T) {
	if _, err := PlanVDSO([]byte("not an ELF image"), 0); err == nil {
		t.Fatal("garbage vDSO accepted")
	}
}

func TestParseAuxv(t *testing.T) {
	b, err := os.ReadFile("/proc/self/auxv")
	if err != nil {
		t.Fatal(err)
	}
	m := parseAuxv(b)
	if m[atRandom] == 0 || m[atSysinfoEhdr] == 0 {
		t.Fatalf("auxv lacks AT_RANDOM or AT_SYSINFO_EHDR: %v", m)
	}
}
