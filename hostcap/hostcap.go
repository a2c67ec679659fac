package hostcap

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Sources a host may be unable to make deterministic: the names of
// --require and of the leaks recorded in reports.
const (
	Rdtsc = "rdtsc" // rdtsc and rdtscp: the TSC, unless the kernel's trap works
	CPUID = "cpuid" // cpuid (the host CPU, RDRAND), unless cpuid can fault
)

// Sources lists them all.
var Sources = []string{Rdtsc, CPUID}

// consequence says what a program sees where a source leaks, and why.
var consequence = map[string]string{
	Rdtsc: "rdtsc runs untrapped after PR_SET_TSC: a program that reads the TSC sees the host's counter, which differs between runs and replicas",
	CPUID: "cpuid cannot fault: a program that executes cpuid sees the host's CPU (model, features, RDRAND), which differs between hosts",
}

// Consequence says what a leak of source means for a run.
func Consequence(source string) string { return consequence[source] }

// ParseRequire parses --require's list (comma-separated; "all" is every
// source).
func ParseRequire(s string) ([]string, error) {
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "":
		case f == "all":
			out = append(out, Sources...)
		case slices.Contains(Sources, f):
			out = append(out, f)
		default:
			return nil, fmt.Errorf("unknown source %q (want %s or all)", f, strings.Join(Sources, ", "))
		}
	}
	return Order(out), nil
}

// Order returns sources deduplicated, in the order of Sources.
func Order(sources []string) []string {
	var out []string
	for _, s := range Sources {
		if slices.Contains(sources, s) {
			out = append(out, s)
		}
	}
	return out
}

// ErrRequired is the error of a run that requires a source this host
// cannot make deterministic.
var ErrRequired = errors.New("required source not deterministic on this host")

// Require returns an error naming each required source among leaks.
func Require(required, leaks []string) error {
	var miss []string
	for _, s := range required {
		if slices.Contains(leaks, s) {
			miss = append(miss, s+" ("+consequence[s]+")")
		}
	}
	if len(miss) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s; run it on a host where lockstep doctor shows them ok, or drop them from --require", ErrRequired, strings.Join(miss, "; "))
}

// Warning is the one line an entry point prints where sources leak ("" if
// none).
func Warning(leaks []string) string {
	if len(leaks) == 0 {
		return ""
	}
	var why []string
	for _, s := range leaks {
		why = append(why, consequence[s])
	}
	return fmt.Sprintf("warning: this host cannot make %s deterministic: %s (lockstep doctor explains; --require %s refuses such hosts)",
		strings.Join(leaks, " and "), strings.Join(why, "; "), strings.Join(leaks, ","))
}

var (
	leaksOnce sync.Once
	leaks     []string
	leaksErr  error
)

// Leaks returns the sources this host cannot make deterministic, measured
// once per process (a few milliseconds: one tiny program per source).
// Programs run as children: a process that reaps every child (containerd's
// shim) must call it before it starts reaping.
func Leaks() ([]string, error) {
	leaksOnce.Do(func() { leaks, leaksErr = measureLeaks() })
	return slices.Clone(leaks), leaksErr
}

// Need says what a check is for.
type Need string

const (
	// Required: Lockstep cannot run here without it.
	Required Need = "required"
	// Determinism: runs work without it, but its Source leaks.
	Determinism Need = "determinism"
	// Containers: lockstep run, pipe, provider and the shim need it;
	// lockstep exec does not.
	Containers Need = "containers"
	// Info: reported, nothing depends on it.
	Info Need = "info"
)

// A Check is one measured capability.
type Check struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Found   string `json:"found"`             // what the measurement showed
	How     string `json:"how"`               // how it was measured
	Need    Need   `json:"need"`              // what depends on it
	Source  string `json:"source,omitempty"`  // Determinism: the source that leaks without it
	Without string `json:"without,omitempty"` // the consequence where it is missing
	Fix     string `json:"fix,omitempty"`     // what to do where it is missing
}

// Report is lockstep doctor's answer.
type Report struct {
	CPU    string  `json:"cpu"`
	Kernel string  `json:"kernel"`
	Checks []Check `json:"checks"`
	// Leaks are the sources this host cannot make deterministic.
	Leaks []string `json:"leaks"`
	// Missing names the failed checks Lockstep cannot run without
	// (Required; Containers too when Options.Containers).
	Missing []string `json:"missing"`
}

// Options say what lockstep doctor is asked about.
type Options struct {
	Containers bool // also require runc and containerd
}
