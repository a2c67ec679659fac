package ebpf

// The BPF object and its Go bindings are generated and committed, so that
// a build needs no clang. `make generate` rebuilds them with the pinned
// compiler (Debian 12's clang-14); CI fails if that changes anything.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -go-package ebpf trace bpf/trace.bpf.c
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -go-package ebpf wake bpf/wake.bpf.c
