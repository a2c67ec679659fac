// Command containerd-shim-lockstep-v1 is the containerd runtime shim for
// the runtime type io.containerd.lockstep.v1: runc, made deterministic.
package main

import (
	"context"

	_ "github.com/containerd/containerd/runtime/v2/runc/pause"
	cshim "github.com/containerd/containerd/runtime/v2/shim"
	"github.com/lockstep-run/lockstep/shim"
)

func main() {
	shim.MaybeRunAgent()
	shim.Register()
	cshim.RunManager(context.Background(), shim.NewManager())
}
