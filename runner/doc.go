// Package runner implements `lockstep exec`: it runs a command and all its
// descendants deterministically, without containerd.
//
// The command is started in three stages (see docs/exec.md):
//
//  1. lockstep itself: the tracer and the agent, which share one virt.World.
//  2. lockstep-init, PID 1 of new PID, mount, UTS and IPC namespaces: it
//     mounts a fresh /proc, sets the hostname, starts stage 3 and reaps.
//  3. lockstep-exec: turns ASLR off, makes rdtsc trap, installs the seccomp
//     filter, sends the listener fd to stage 1, waits to be seized, and
//     execs the command.
//
// Stages 2 and 3 are this same binary re-executed (/proc/self/exe), chosen
// by argv[0]; main calls MaybeRunStage first thing.
package runner
