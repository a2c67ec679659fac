//go:build linux

package agent

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDirentEncoding(t *testing.T) {
	for _, f := range []direntFormat{dirent64, direntOld} {
		n := f.reclen("hello")
		if n%8 != 0 || n < 19+6 {
			t.Fatalf("reclen %d", n)
		}
		b := make([]byte, n)
		f.put(b, 42, 7, unix.DT_REG, "hello")
		if binary.LittleEndian.Uint64(b) != 42 || binary.LittleEndian.Uint64(b[8:]) != 7 || int(binary.LittleEndian.Uint16(b[16:])) != n {
			t.Fatalf("format %d: header %x", f, b[:18])
		}
		name, typ := b[19:24], b[18]
		if f == direntOld {
			name, typ = b[18:23], b[n-1]
		}
		if string(name) != "hello" || typ != unix.DT_REG {
			t.Fatalf("format %d: name %q type %d", f, name, typ)
		}
	}
}

// readDir lists in name order whatever order the filesystem keeps.
func TestReadDirSorts(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"zeta", "alpha", "Mid", "beta", "10", "9"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o644)
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ents, err := readDir(fd)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.name)
	}
	if !sort.StringsAreSorted(names) || len(names) != 8 || names[0] != "." || names[1] != ".." {
		t.Fatalf("listing %v", names)
	}
}
