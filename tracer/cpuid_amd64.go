package tracer

func cpuid(leaf, sub uint32) (a, b, c, d uint32)

// Bits of the CPUID leaves a tracee sees (Intel SDM vol. 2A, CPUID).
const (
	leaf1ECXRdrand    = 1 << 30
	leaf1EBXApicID    = 0xff << 24
	leaf7EBXRdseed    = 1 << 18
	leafExtBrandFirst = 0x80000002
	leafExtBrandLast  = 0x80000004
)

var brand = [48]byte{}

func init() { copy(brand[:], "Lockstep Virtual CPU") }

// VirtualCPUID is what a faulting cpuid returns: the host's answer with
// RDRAND and RDSEED hidden, APIC IDs zeroed (they name the core a thread
// runs on) and a fixed brand string.
func VirtualCPUID(leaf, sub uint32) (a, b, c, d uint32) {
	a, b, c, d = cpuid(leaf, sub)
	switch {
	case leaf == 1:
		c &^= leaf1ECXRdrand
		b &^= leaf1EBXApicID
	case leaf == 7 && sub == 0:
		b &^= leaf7EBXRdseed
	case leaf == 0xb || leaf == 0x1f:
		d = 0 // x2APIC ID
	case leaf >= leafExtBrandFirst && leaf <= leafExtBrandLast:
		o := (leaf - leafExtBrandFirst) * 16
		a, b, c, d = le.Uint32(brand[o:]), le.Uint32(brand[o+4:]), le.Uint32(brand[o+8:]), le.Uint32(brand[o+12:])
	}
	return a, b, c, d
}
