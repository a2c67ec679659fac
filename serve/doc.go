// Package serve is lockstep serve's gateway: the guard of a replicated
// network service. It accepts TCP clients and turns each connection's
// open, bytes and close into entries of the run's input log; every
// replica receives them, in log order, as real connections to its
// service's port (shim, virt.Timeline); each replica's response bytes
// come back per connection, and a client gets each byte once a majority
// of the replicas sent it identically. A replica that differs is named
// and leaves the vote; the others go on answering. See docs/serve.md.
//
// The gateway is also the guard of a run's connections out of the run
// (egress, for lockstep run, pipe and serve: docs/egress.md): it dials
// (or pings) once when a majority of the replicas asked, as its Policy
// (--allow-net) allows, logs the result and the remote's bytes, and
// forwards to the remote only what a majority sent alike.
package serve
