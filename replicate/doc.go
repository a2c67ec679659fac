// Package replicate is `lockstep run`: stdin becomes entries of a fresh
// stream in logd; N containers of the Lockstep runtime each read the
// stream through a verifying follower as their stdin; their outputs are
// compared checkpoint by checkpoint and what a majority agrees on is
// written out as soon as it is agreed; each replica then signs a digest of
// its output against the log's last checkpoint, and logd's verifier gives
// its verdict. See docs/run.md.
package replicate
