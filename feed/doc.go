// Package feed is the wire between a provider, which follows and
// verifies a replica's input stream, and the replica's runtime (the
// shim's agent), whose clocks follow that stream (virt.Timeline).
//
// The provider listens on a Unix socket it names in the container's
// io.lockstep.input annotation; the agent connects. The provider sends
// the stream's entries after its seed, in order (input, eof, tick, end,
// and a served stream's open, data, close and stop);
// the agent sends back the deadlines it waits for (the guard appends a
// tick once its clock passes one) and how many entries the program has
// taken, and what a served service sent on each connection.
// docs/log-format.md, "Time"; docs/serve.md.
package feed
