package tracer

import (
	"encoding/binary"

	"github.com/lockstep-run/lockstep/virt"
)

// Layouts of the x86_64 structs the tracer rewrites.
const (
	sizeofStat    = 144
	sizeofStatx   = 152 // through stx_mnt_id
	sizeofRusage  = 144
	sizeofSiginfo = 128
	blockSize     = 4096
	sIFMT         = 0o170000
	sIFDIR        = 0o040000
	sIFREG        = 0o100000
	sIFLNK        = 0o120000
)

var le = binary.LittleEndian

// fixStat rewrites a struct stat: device and inode numbers become stable
// virtual ones, the three times become the (virtual) modification time,
// and sizes and block counts stop depending on the host filesystem. A
// directory's link count becomes 1, as filesystems that do not count
// subdirectories report it (find and fts then do not use it): procfs
// counts every process on the host in its root's.
func fixStat(b []byte, w *virt.World, tgid int32) {
	dev, ino := le.Uint64(b[0:]), le.Uint64(b[8:])
	mode := le.Uint32(b[24:])
	le.PutUint64(b[0:], w.Dev(dev))
	le.PutUint64(b[8:], w.Ino(dev, ino))
	if mode&sIFMT == sIFDIR {
		le.PutUint64(b[16:], 1) // st_nlink
	}
	size, blocks := normalSize(mode, int64(le.Uint64(b[48:])))
	le.PutUint64(b[48:], uint64(size))
	le.PutUint64(b[56:], blockSize)
	le.PutUint64(b[64:], uint64(blocks))
	m := w.FileTime(tgid, dev, ino, int64(le.Uint64(b[88:]))*1e9+int64(le.Uint64(b[96:])))
	for _, off := range []int{72, 88, 104} { // atime, mtime, ctime
		le.PutUint64(b[off:], uint64(m/1e9))
		le.PutUint64(b[off+8:], uint64(m%1e9))
	}
}

// fixStatx does for struct statx what fixStat does for struct stat; the
// mount ID becomes the virtual device number.
func fixStatx(b []byte, w *virt.World, tgid int32) {
	dev := virt.Mkdev(le.Uint32(b[136:]), le.Uint32(b[140:]))
	ino := le.Uint64(b[32:])
	mode := uint32(le.Uint16(b[28:]))
	vdev := w.Dev(dev)
	le.PutUint64(b[32:], w.Ino(dev, ino))
	le.PutUint32(b[136:], virt.Major(vdev))
	le.PutUint32(b[140:], virt.Minor(vdev))
	le.PutUint64(b[144:], vdev)
	le.PutUint32(b[4:], blockSize)
	if mode&sIFMT == sIFDIR {
		le.PutUint32(b[16:], 1) // stx_nlink
	}
	size, blocks := normalSize(mode, int64(le.Uint64(b[40:])))
	le.PutUint64(b[40:], uint64(size))
	le.PutUint64(b[48:], uint64(blocks))
	m := w.FileTime(tgid, dev, ino, int64(le.Uint64(b[112:]))*1e9+int64(le.Uint32(b[120:])))
	for _, off := range []int{64, 80, 96, 112} { // atime, btime, ctime, mtime
		le.PutUint64(b[off:], uint64(m/1e9))
		le.PutUint32(b[off+8:], uint32(m%1e9))
	}
}

// normalSize reports sizes as a 4 KiB-block filesystem with no holes
// would: directories are one block, files are whole blocks.
func normalSize(mode uint32, size int64) (int64, int64) {
	switch mode & sIFMT {
	case sIFDIR:
		return blockSize, blockSize / 512
	case sIFREG:
		return size, (size + blockSize - 1) / blockSize * (blockSize / 512)
	}
	return size, 0
}

// FixStat rewrites a struct stat (144 bytes, x86_64) as the tracer does at
// a stat syscall's exit, for process tgid; the agent uses it for the stat
// calls it answers.
func FixStat(b []byte, w *virt.World, tgid int32) { fixStat(b, w, tgid) }
