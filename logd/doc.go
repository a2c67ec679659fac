// Package logd is Lockstep's replicated input log: versioned entries
// (input chunks, ticks, seeds, configuration, end of stream) in a Merkle
// log in the Certificate Transparency design, with checkpoints (tree size
// and root) signed by the appender's ed25519 key; inclusion and
// consistency proofs; and the portable file form used to export, import
// and verify a stream. See docs/log-format.md.
package logd
