// Command lockstep-logd serves Lockstep's replicated input log over
// HTTP/JSON, on an embedded etcd member or an etcd cluster (wiring only:
// see package logd and docs/logd.md).
package main
