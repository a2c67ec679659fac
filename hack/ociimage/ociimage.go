// Package ociimage writes OCI image archives (an OCI image layout in a
// tar, what `ctr image import` reads) from files on this machine: static
// binaries, dynamic ones with the shared libraries they load, or a whole
// root filesystem such as one made by debootstrap. No registry is needed.
//
// The archive is reproducible: entries are sorted, owned by root and
// dated at the epoch, so the same inputs give the same image digest.
package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Image describes one image.
type Image struct {
	Name   string            // e.g. "lockstep.test/probe:latest"
	Files  map[string]string // path in the image -> path on the host
	RootFS string            // a host directory copied to / first ("" for none)
	Trees  map[string]string // path in the image -> host directory copied there
	// Skip leaves out files or directories of a tree (keyed by the
	// tree's path in the image; rel is relative to the tree).
	Skip       map[string]func(rel string) bool
	Entrypoint []string
	Cmd        []string
	Env        []string // default: PATH
}

// AddBinary adds host binary src at dst and, if it is dynamically linked,
// the loader and every shared library it loads (as ldd reports them), at
// their host paths.
func (im *Image) AddBinary(src, dst string) error {
	if im.Files == nil {
		im.Files = map[string]string{}
	}
	im.Files[dst] = src
	return im.addLibraries(src)
}

// addLibraries adds the loader and the shared libraries bin loads, at
// their host paths.
func (im *Image) addLibraries(bin string) error {
	libs, err := SharedLibraries(bin)
	if err != nil {
		return err
	}
	for _, l := range libs {
		im.Files[l] = l
	}
	return nil
}

var lddLine = regexp.MustCompile(`(?:=>\s*)?(/\S+)\s+\(0x`)

// SharedLibraries lists what ldd says bin loads (none for a static binary).
func SharedLibraries(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		if strings.Contains(string(out), "not a dynamic executable") || strings.Contains(string(out), "statically linked") {
			return nil, nil
		}
		return nil, fmt.Errorf("ldd %s: %v: %s", bin, err, out)
	}
	var libs []string
	for _, m := range lddLine.FindAllStringSubmatch(string(out), -1) {
		libs = append(libs, m[1])
	}
	return libs, nil
}

// entry is one file of the layer.
type entry struct {
	hdr  tar.Header
	data []byte
}

// WriteArchive writes the image as an OCI archive to w.
func (im *Image) WriteArchive(w io.Writer) error {
	layer, err := im.layer()
	if err != nil {
		return err
	}
	layerDigest := digest(layer)
	env := im.Env
	if env == nil {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Env": env, "Entrypoint": im.Entrypoint, "Cmd": im.Cmd},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
	})
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", config, nil),
		"layers":        []any{descriptor("application/vnd.oci.image.layer.v1.tar", layer, nil)},
	})
	index, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{descriptor("application/vnd.oci.image.manifest.v1+json", manifest, map[string]string{
			"io.containerd.image.name":          im.Name,
			"org.opencontainers.image.ref.name": im.Name,
		})},
	})
	tw := tar.NewWriter(w)
	files := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{blobPath(config), config},
		{blobPath(manifest), manifest},
		{blobPath(layer), layer},
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// WriteFile writes the archive to a file.
func (im *Image) WriteFile(path string) error {
	var b bytes.Buffer
	if err := im.WriteArchive(&b); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func blobPath(b []byte) string { return "blobs/sha256/" + strings.TrimPrefix(digest(b), "sha256:") }

func descriptor(mediaType string, b []byte, annotations map[string]string) map[string]any {
	d := map[string]any{"mediaType": mediaType, "digest": digest(b), "size": len(b)}
	if annotations != nil {
		d["annotations"] = annotations
	}
	return d
}

// layer returns the image's one layer: RootFS, then Files over it, with
// every parent directory, and /tmp.
func (im *Image) layer() ([]byte, error) {
	entries := map[string]*entry{}
	if im.RootFS != "" {
		if err := addTree(entries, im.RootFS, "", nil); err != nil {
			return nil, err
		}
	}
	for dst, src := range im.Trees {
		if err := addTree(entries, src, path.Clean("/" + dst)[1:], im.Skip[dst]); err != nil {
			return nil, err
		}
	}
	if _, ok := entries["tmp"]; !ok {
		entries["tmp"] = &entry{hdr: tar.Header{Typeflag: tar.TypeDir, Mode: 0o1777}}
	}
	for dst, src := range im.Files {
		if err := addFile(entries, path.Clean("/" + dst)[1:], src); err != nil {
			return nil, err
		}
	}
	for name := range entries {
		for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = &entry{hdr: tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}}
			}
		}
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, n := range names {
		e := entries[n]
		e.hdr.Name = n
		if e.hdr.Typeflag == tar.TypeDir {
			e.hdr.Name += "/"
		}
		e.hdr.ModTime, e.hdr.Uid, e.hdr.Gid, e.hdr.Uname, e.hdr.Gname = time.Unix(0, 0), 0, 0, "", ""
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, fmt.Errorf("layer: %s: %w", n, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func addFile(entries map[string]*entry, name, src string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	entries[name] = &entry{hdr: tar.Header{Typeflag: tar.TypeReg, Mode: int64(st.Mode().Perm()), Size: int64(len(data))}, data: data}
	return nil
}

// addTree adds every file under root at dir ("" for /), keeping
// symlinks, modes and device nodes (as debootstrap makes them), but not
// owners or times; skip, if not nil, leaves paths out.
func addTree(entries map[string]*entry, root, dir string, skip func(string) bool) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if skip != nil && skip(filepath.ToSlash(rel)) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		e := &entry{hdr: *hdr}
		if info.Mode().IsRegular() {
			if e.data, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		entries[path.Join(dir, filepath.ToSlash(rel))] = e
		return nil
	})
}

// AddPython adds the host's Python interpreter bin (e.g. /usr/bin/python3)
// at its host path, with its standard library and the shared libraries
// of its extension modules: the interpreter Debian ships, in an image
// without the rest of Debian. Left out: tests, IDLE, Tk, the static
// library, and the byte-code caches (the image's files carry no times,
// so a cache would not match them).
func (im *Image) AddPython(bin string) error {
	out, err := exec.Command(bin, "-c", "import sys,sysconfig; print(sys.executable); print(sysconfig.get_paths()['stdlib'])").Output()
	if err != nil {
		return fmt.Errorf("python %s: %w", bin, err)
	}
	exe, stdlib, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	exe, _ = filepath.EvalSymlinks(exe)
	if err := im.AddBinary(exe, exe); err != nil {
		return err
	}
	if bin != exe {
		im.Files[bin] = exe
	}
	if im.Trees == nil {
		im.Trees = map[string]string{}
	}
	if im.Skip == nil {
		im.Skip = map[string]func(string) bool{}
	}
	im.Trees[stdlib] = stdlib
	im.Skip[stdlib] = func(rel string) bool {
		base := path.Base(rel)
		return base == "__pycache__" || base == "test" || base == "idlelib" || base == "tkinter" || strings.HasPrefix(base, "config-")
	}
	mods, _ := filepath.Glob(filepath.Join(stdlib, "lib-dynload", "*.so"))
	for _, m := range mods {
		if err := im.addLibraries(m); err != nil {
			return err
		}
	}
	return nil
}
