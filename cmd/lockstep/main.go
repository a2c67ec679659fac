package main

import (
	"os"

	"github.com/lockstep-run/lockstep/cli"
	"github.com/lockstep-run/lockstep/runner"
)

func main() {
	runner.MaybeRunStage() // re-executed as lockstep-init or lockstep-exec
	os.Exit(cli.Main(os.Args[1:]))
}
