// Package hub is Lockstep's hub: the server where microservices are
// registered by name and providers announce themselves, and the guard
// that runs a named service's replicas for a requestor, so that the
// requestor sends its input once and receives the verified output once,
// whatever the replica count.
//
// Every party (hub, provider, requestor, service owner) is an ed25519
// key; every connection between them is TLS 1.3 with both sides
// presenting a self-signed certificate of their key, and each side pins
// the key it expects (ident.go). The hub keeps providers, services and
// runs in etcd, beside the logs it writes as the guard (store.go). The
// protocol is in docs/hub.md.
package hub
