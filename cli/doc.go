// Package cli is the `lockstep` command line: one function per command,
// flags parsed with pflag. cmd/lockstep only calls Main.
package cli
