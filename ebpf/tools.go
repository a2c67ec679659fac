//go:build tools

package ebpf

// bpf2go is a build tool (gen.go); this import keeps it in go.mod.
import _ "github.com/cilium/ebpf/cmd/bpf2go"
