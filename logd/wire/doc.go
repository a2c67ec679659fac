// Package wire holds what replicas and shims send to logd, without logd's
// own dependencies (etcd): the text form of keys, private key files, and
// signed traces (a replica's I/O digest chains) with their upload.
package wire
