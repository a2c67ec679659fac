package tracer

import (
	"testing"
	"time"

	"github.com/lockstep-run/lockstep/virt"
)

func TestFixStat(t *testing.T) {
	w, _ := virt.New(virt.DefaultConfig(), nil)
	w.Start()
	b := make([]byte, sizeofStat)
	le.PutUint64(b[0:], 2049)   // st_dev
	le.PutUint64(b[8:], 987654) // st_ino
	le.PutUint32(b[24:], sIFREG|0o644)
	le.PutUint64(b[48:], 5000)       // st_size
	le.PutUint64(b[64:], 24)         // st_blocks: host allocation
	le.PutUint64(b[72:], 1700000000) // atime
	le.PutUint64(b[88:], 1600000000) // mtime, before the run
	le.PutUint64(b[104:], uint64(time.Now().Unix()))
	le.PutUint64(b[16:], 3) // st_nlink of a file: kept
	fixStat(b, w, 0)
	if n := le.Uint64(b[16:]); n != 3 {
		t.Errorf("a file's link count became %d, want 3", n)
	}
	if d, i := le.Uint64(b[0:]), le.Uint64(b[8:]); d != w.Dev(2049) || i != w.Ino(2049, 987654) {
		t.Fatalf("dev %d ino %d not virtual", d, i)
	}
	if le.Uint64(b[64:]) != 16 || le.Uint64(b[56:]) != blockSize {
		t.Fatalf("blocks %d blksize %d: want 16 and 4096 for 5000 bytes", le.Uint64(b[64:]), le.Uint64(b[56:]))
	}
	for _, off := range []int{72, 88, 104} {
		if le.Uint64(b[off:]) != 1600000000 {
			t.Errorf("time at %d is %d, want the mtime", off, le.Uint64(b[off:]))
		}
	}
}

func TestFixStatxDevices(t *testing.T) {
	w, _ := virt.New(virt.DefaultConfig(), nil)
	b := make([]byte, sizeofStatx)
	le.PutUint32(b[136:], 8) // major
	le.PutUint32(b[140:], 1) // minor
	le.PutUint16(b[28:], sIFDIR|0o755)
	le.PutUint64(b[40:], 12288)
	le.PutUint32(b[16:], 87) // stx_nlink: procfs's root counts the host's processes
	fixStatx(b, w, 0)
	if n := le.Uint32(b[16:]); n != 1 {
		t.Errorf("a directory's link count is %d, want 1", n)
	}
	v := w.Dev(virt.Mkdev(8, 1))
	if virt.Mkdev(le.Uint32(b[136:]), le.Uint32(b[140:])) != v || le.Uint64(b[144:]) != v {
		t.Fatal("statx device or mount id not virtual")
	}
	if le.Uint64(b[40:]) != blockSize {
		t.Fatalf("directory size %d, want one block", le.Uint64(b[40:]))
	}
}

func TestDevEncoding(t *testing.T) {
	for _, d := range [][2]uint32{{0, 0}, {8, 1}, {259, 70000}, {4095, 255}} {
		dev := virt.Mkdev(d[0], d[1])
		if virt.Major(dev) != d[0] || virt.Minor(dev) != d[1] {
			t.Errorf("%v round-trips to %d:%d", d, virt.Major(dev), virt.Minor(dev))
		}
	}
}
