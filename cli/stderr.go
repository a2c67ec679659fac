package cli

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/lockstep-run/lockstep/replicate"
)

// checkStderrMode checks --stderr: majority, none or replica-N.
func checkStderrMode(mode string, replicas int) error {
	if mode == "majority" || mode == "none" {
		return nil
	}
	if n, ok := strings.CutPrefix(mode, "replica-"); ok {
		if i, err := strconv.Atoi(n); err == nil && i >= 0 && i < replicas {
			return nil
		}
		return fmt.Errorf("%q: the replicas are replica-0 to replica-%d", mode, replicas-1)
	}
	return fmt.Errorf("%q: want majority, none or replica-N", mode)
}

// showStderr writes the replicas' stderr as --stderr says. majority: the
// stderr that more than half of the replicas that agree (all of them, if
// none agrees) wrote; if there is none such, a note says so. Stderr is
// shown, not voted on: the verdict is on stdout and the exit status.
func showStderr(w io.Writer, name, mode string, v replicate.Verdict) {
	if mode == "none" || len(v.Replicas) == 0 {
		return
	}
	var pick *replicate.ReplicaReport
	if mode != "majority" {
		for i := range v.Replicas {
			if v.Replicas[i].Name == mode {
				pick = &v.Replicas[i]
			}
		}
	} else {
		pool := make([]*replicate.ReplicaReport, 0, len(v.Replicas))
		for i := range v.Replicas {
			if v.Replicas[i].State == "agreed" {
				pool = append(pool, &v.Replicas[i])
			}
		}
		if len(pool) == 0 {
			for i := range v.Replicas {
				pool = append(pool, &v.Replicas[i])
			}
		}
		count := map[string]int{}
		for _, r := range pool {
			if count[r.Stderr]++; count[r.Stderr]*2 > len(pool) {
				pick = r
			}
		}
		if pick == nil {
			fmt.Fprintf(w, "lockstep %s: the replicas wrote different stderr (--stderr replica-N shows one)\n", name)
			return
		}
	}
	if pick == nil {
		return
	}
	io.WriteString(w, pick.Stderr)
	if pick.StderrCut {
		fmt.Fprintf(w, "\nlockstep %s: (%s's stderr cut at %d bytes)\n", name, pick.Name, replicate.MaxStderr)
	}
}
