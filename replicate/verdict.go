package replicate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/lockstep-run/lockstep/hostcap"
	"github.com/lockstep-run/lockstep/logd"
)

// verdict judges the ended run: the majority is the replicas with the same
// output digest and exit status, checked against what each provider
// reported.
func (v *voter) verdict() Verdict {
	out := Verdict{Bytes: v.sent, ExitCode: 1}
	groups := map[string][]*replica{}
	lied := map[string]bool{} // replicas whose provider signed a digest of other output
	for _, r := range v.reps {
		rep := ReplicaReport{Name: r.name, Provider: r.provider, Bytes: r.total, Exit: r.res.Exit, Digest: r.res.Digest, Leaks: r.leaks, Stderr: string(r.stderr), StderrCut: r.errCut}
		received := r.digest.Sum(r.res.Exit)
		switch {
		case r.err != nil && v.over && errors.Is(r.err, context.Canceled):
			rep.State, rep.Why = "stopped", v.fault
		case r.err != nil:
			rep.State, rep.Why = "lost", r.err.Error()
			out.Lost = append(out.Lost, r.name)
		case r.res.Digest != received:
			// The provider signed a digest of other output than it sent.
			rep.State, rep.Why = "odd", fmt.Sprintf("its provider reported digest %.16s… for output whose digest is %.16s…", r.res.Digest, received)
			lied[r.name] = true
		default:
			groups[received] = append(groups[received], r)
		}
		out.Replicas = append(out.Replicas, rep)
	}
	majority := ""
	for d, rs := range groups {
		if len(rs) >= v.need {
			majority = d
			out.ExitCode = rs[0].res.Exit
		}
	}
	for i, r := range v.reps {
		rep := &out.Replicas[i]
		if rep.State != "" {
			if rep.State == "odd" {
				out.Odd = append(out.Odd, r.name)
			}
			continue
		}
		if r.digest.Sum(r.res.Exit) == majority && r.odd == "" && !v.over {
			rep.State = "agreed"
			continue
		}
		rep.State, rep.Why = "odd", r.odd
		if rep.Why == "" {
			rep.Why = "its output or exit status differs from the majority's"
		}
		out.Odd = append(out.Odd, r.name)
	}
	out.Agreed = majority != "" && len(out.Odd) == 0 && !v.over
	agreed := len(v.reps) - len(out.Odd) - len(out.Lost)
	switch {
	case out.Agreed && len(out.Lost) == 0:
		out.Detail = fmt.Sprintf("%d replicas agree: %d bytes, exit status %d", len(v.reps), v.sent, out.ExitCode)
	case majority != "" && !v.over:
		var why []string
		for _, r := range out.Replicas {
			if r.State != "agreed" {
				why = append(why, fmt.Sprintf("%s on %s is %s: %s", r.Name, r.Provider, r.State, r.Why))
			}
		}
		out.Detail = fmt.Sprintf("a majority of %d of %d agrees (%d bytes, exit status %d); %s", agreed, len(v.reps), v.sent, out.ExitCode, strings.Join(why, "; "))
	default:
		out.Detail = "no majority: " + v.fault
		if len(out.Lost) > 0 {
			out.Detail += fmt.Sprintf(" (%d of %d replicas lost)", len(out.Lost), len(v.reps))
		}
	}
	v.hostLimited(&out, lied)
	return out
}

// hostLimited takes a difference that the replicas' hosts can explain
// (some could not make rdtsc or cpuid deterministic) off the replicas: they
// "differ", none is named odd for it, and the detail says so. A replica
// whose provider signed a digest of other output than it sent stays odd:
// no host explains that.
func (v *voter) hostLimited(out *Verdict, lied map[string]bool) {
	leaks := map[string][]string{}
	var sources []string
	for _, r := range v.reps {
		if len(r.leaks) > 0 {
			leaks[r.name] = r.leaks
			sources = append(sources, r.leaks...)
		}
	}
	if len(leaks) == 0 {
		return
	}
	out.Leaks = leaks
	sources = hostcap.Order(sources)
	differ := len(out.Odd) > 0 || v.over
	if !differ {
		return
	}
	out.HostLimited, out.Agreed = true, false
	out.Odd = slices.DeleteFunc(out.Odd, func(n string) bool { return !lied[n] })
	for i := range out.Replicas {
		r := &out.Replicas[i]
		if r.State == "odd" && !lied[r.Name] || r.State == "stopped" {
			r.State = "differs"
		}
	}
	detail := v.fault
	if detail == "" {
		detail = "the replicas' outputs or exit statuses differ"
	}
	if v.over {
		detail = "no majority: " + detail
	}
	out.Detail = fmt.Sprintf("host cannot make %s deterministic: %s; %s", strings.Join(sources, " and "), detail, logd.HostLimited(leaks))
}

// noneRan is the run's error when every replica failed before it wrote a
// byte: a set-up failure (no image, no containerd, a provider refused or
// unreachable), not a divergence. Replicas that failed alike are named
// together; one the vote stopped meanwhile, having written nothing,
// hides no cause.
func (v *voter) noneRan() error {
	var causes, stopped []string
	who := map[string][]string{}
	for _, r := range v.reps {
		if r.err == nil || r.total > 0 {
			return nil
		}
		if errors.Is(r.err, context.Canceled) {
			// Stopped by the vote once the others had failed, before
			// it started (or failed) itself.
			stopped = append(stopped, r.name+" on "+r.provider)
			continue
		}
		c := r.err.Error()
		if who[c] == nil {
			causes = append(causes, c)
		}
		who[c] = append(who[c], r.name+" on "+r.provider)
	}
	if len(causes) == 0 {
		return nil
	}
	var why []string
	for _, c := range causes {
		why = append(why, strings.Join(who[c], ", ")+": "+c)
	}
	if len(stopped) > 0 {
		why = append(why, strings.Join(stopped, ", ")+": stopped once the others had failed")
	}
	return fmt.Errorf("%w: %s", ErrNoneRan, strings.Join(why, "; "))
}

// ErrNoneRan is the error of a run whose replicas all failed to start.
var ErrNoneRan = errors.New("no replica ran")

// ErrInterrupted is the error of a run whose context was cancelled (the
// user's Ctrl-C or SIGTERM): its replicas were stopped, not judged.
var ErrInterrupted = errors.New("interrupted")
