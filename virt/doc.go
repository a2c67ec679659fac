// Package virt is the deterministic world a Lockstep process tree sees:
// virtual clocks, seeded entropy streams, a fixed host identity, stable
// inode and device numbers, and the record/replay log of the values served.
//
// Everything here is a pure function of the Config and of the order of the
// requests, so two runs that make the same requests get the same answers.
// A World is safe for concurrent use; the agent and the tracer share one.
// The semantics (which clock advances when) are specified in
// docs/determinism.md.
package virt
