package main

import (
	"os"

	"github.com/lockstep-run/lockstep/logd"
)

func main() { os.Exit(logd.RunDaemon(os.Args[1:], os.Stdout, os.Stderr)) }
