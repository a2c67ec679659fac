// Command lockstep is Lockstep's command line; see package cli. It is also
// re-executed as lockstep-init and lockstep-exec (package runner).
package main
