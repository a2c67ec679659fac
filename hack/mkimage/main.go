package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/lockstep-run/lockstep/hack/ociimage"
	"github.com/spf13/pflag"
)

func main() {
	fs := pflag.NewFlagSet("mkimage", pflag.ContinueOnError)
	out := fs.StringP("output", "o", "", "write the archive to `FILE`")
	name := fs.StringP("name", "n", "", "image `NAME` (e.g. lockstep.test/probe:latest)")
	rootfs := fs.String("rootfs", "", "copy host `DIR` (e.g. made by debootstrap) to the image's /")
	bins := fs.StringArray("bin", nil, "add a binary `SRC[:DST]` and, if dynamic, its shared libraries")
	files := fs.StringArray("file", nil, "add a file `SRC:DST`")
	trees := fs.StringArray("tree", nil, "add a host directory `SRC:DST`")
	python := fs.String("python", "", "add the host's Python interpreter `BIN` with its standard library")
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: mkimage -o FILE -n NAME [--rootfs DIR] [--bin SRC[:DST]]... [--file SRC:DST]... [--tree SRC:DST]... [--python BIN] [-- CMD ARGS...]\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *out == "" || *name == "" {
		fs.Usage()
		os.Exit(2)
	}
	im := &ociimage.Image{Name: *name, RootFS: *rootfs, Files: map[string]string{}, Trees: map[string]string{}, Cmd: fs.Args()}
	if *python != "" {
		if err := im.AddPython(*python); err != nil {
			fmt.Fprintln(os.Stderr, "mkimage:", err)
			os.Exit(1)
		}
	}
	pairs("tree", *trees, im.Trees)
	for _, b := range *bins {
		src, dst, ok := strings.Cut(b, ":")
		if !ok {
			dst = "/" + src[strings.LastIndex(src, "/")+1:]
		}
		if err := im.AddBinary(src, dst); err != nil {
			fmt.Fprintln(os.Stderr, "mkimage:", err)
			os.Exit(1)
		}
	}
	pairs("file", *files, im.Files)
	if err := im.WriteFile(*out); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

// pairs puts each SRC:DST of flag's values into m as dst -> src.
func pairs(flag string, values []string, m map[string]string) {
	for _, v := range values {
		src, dst, ok := strings.Cut(v, ":")
		if !ok {
			fmt.Fprintf(os.Stderr, "mkimage: --%s %s: want SRC:DST\n", flag, v)
			os.Exit(2)
		}
		m[dst] = src
	}
}
