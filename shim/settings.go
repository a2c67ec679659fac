package shim

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/lockstep-run/lockstep/hostcap"
	"github.com/lockstep-run/lockstep/virt"
	"github.com/pelletier/go-toml"
)

// Annotations a container may set (OCI spec annotations, e.g. `ctr run
// --annotation`, nerdctl `--annotation`, or a pod's annotations through
// CRI). They override the runtime options file.
const (
	AnnotationSeed     = "io.lockstep.seed"     // decimal uint64
	AnnotationEpoch    = "io.lockstep.epoch"    // RFC 3339
	AnnotationCPUs     = "io.lockstep.cpus"     // processors reported
	AnnotationMemory   = "io.lockstep.memory"   // bytes reported
	AnnotationHostname = "io.lockstep.hostname" // when the spec has none
	AnnotationLog      = "io.lockstep.log"      // absolute host path: record, or replay if it exists
	AnnotationDigests  = "io.lockstep.digests"  // absolute host path: the I/O digest chains (eBPF), written at delete
	AnnotationAudit    = "io.lockstep.audit"    // absolute host path: the audit's findings (eBPF), written at delete
	AnnotationRequire  = "io.lockstep.require"  // sources the host must make deterministic (rdtsc, cpuid, all): create fails where it cannot
	// The container's stdin and clocks follow an input stream that a
	// provider feeds on this Unix socket (package feed).
	AnnotationInput = "io.lockstep.input" // absolute host path of the socket
	// The stream's connections (lockstep serve) are made to this TCP port
	// on the container's loopback, in its network namespace.
	AnnotationPort = "io.lockstep.port"

	// The digest chains reported to logd as a replica's trace at delete
	// (all four, or none).
	AnnotationLogd    = "io.lockstep.logd"    // logd's URL, e.g. http://10.0.0.1:7070
	AnnotationStream  = "io.lockstep.stream"  // the input log's stream
	AnnotationReplica = "io.lockstep.replica" // this replica's name
	AnnotationKey     = "io.lockstep.key"     // absolute host path: the replica's private key file
)

// Settings are one container's determinism settings.
type Settings struct {
	Config  virt.Config
	Log     string // exec log path on the host, "" for none
	Digests string // where to write the digest chains, "" for none
	Audit   string // where to write the audit, "" for none
	Input   string // the feed's socket: stdin and time follow the input stream
	Port    int    // the served port, with Input: 0 for none
	// EpochSet says the epoch was given (annotation or options file):
	// otherwise a new exec log starts at the real time, and a replay at
	// the recorded one.
	EpochSet bool
	// Require names sources (hostcap) the host must make deterministic.
	Require []string

	// Where to report the digest chains as a trace ("" for nowhere).
	Logd, Stream, Replica, Key string
}

// Traced reports whether the container's output is traced (eBPF).
func (s *Settings) Traced() bool { return s.Digests != "" || s.Logd != "" }

// DefaultSettings are what a container gets with no annotation and no
// options file: the same defaults as `lockstep exec`.
func DefaultSettings() Settings { return Settings{Config: virt.DefaultConfig()} }

// ApplyOptionsFile reads a runtime options file, the TOML file CRI names
// in runtimeoptions.v1.Options.ConfigPath for a non-runc runtime:
//
//	seed = 7
//	epoch = "2025-01-01T00:00:00Z"
//	cpus = 1
//	memory = 4294967296
//	hostname = "lockstep"
//	log = "/var/lib/lockstep/run.log"
//
// Keys may also sit under a [lockstep] table. Unknown keys are errors, so
// that a misspelt setting is not silently ignored.
func (s *Settings) ApplyOptionsFile(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("runtime options: %w", err)
	}
	return s.applyTOML(path, b)
}

func (s *Settings) applyTOML(name string, b []byte) error {
	tree, err := toml.LoadBytes(b)
	if err != nil {
		return fmt.Errorf("runtime options %s: %w", name, err)
	}
	if sub, ok := tree.Get("lockstep").(*toml.Tree); ok && len(tree.Keys()) == 1 {
		tree = sub
	}
	values := map[string]string{}
	for _, k := range tree.Keys() {
		key, ok := optionKeys[k]
		if !ok {
			return fmt.Errorf("runtime options %s: unknown key %q (want seed, epoch, cpus, memory, hostname, log, digests, audit, require, logd, stream, replica, key)", name, k)
		}
		values[key] = fmt.Sprint(tree.Get(k))
	}
	return s.apply(values, "runtime options "+name+": ")
}

var optionKeys = map[string]string{
	"seed": AnnotationSeed, "epoch": AnnotationEpoch, "cpus": AnnotationCPUs,
	"memory": AnnotationMemory, "hostname": AnnotationHostname, "log": AnnotationLog,
	"digests": AnnotationDigests, "audit": AnnotationAudit, "require": AnnotationRequire,
	"port": AnnotationPort, "logd": AnnotationLogd, "stream": AnnotationStream, "replica": AnnotationReplica, "key": AnnotationKey,
}

// ApplyAnnotations applies the io.lockstep.* annotations, after the
// runtime options file, and checks the whole.
func (s *Settings) ApplyAnnotations(a map[string]string) error {
	if err := s.apply(a, "annotation "); err != nil {
		return err
	}
	if s.Port != 0 && s.Input == "" {
		return fmt.Errorf("%s needs %s: connections come from an input stream", AnnotationPort, AnnotationInput)
	}
	if set := s.Logd != "" || s.Stream != "" || s.Replica != "" || s.Key != ""; set && (s.Logd == "" || s.Stream == "" || s.Replica == "" || s.Key == "") {
		return fmt.Errorf("reporting a trace to logd needs all of %s, %s, %s and %s", AnnotationLogd, AnnotationStream, AnnotationReplica, AnnotationKey)
	}
	return nil
}

func (s *Settings) apply(values map[string]string, where string) error {
	bad := func(key, v string, err error) error {
		return fmt.Errorf("%s%s=%q: %v", where, key, v, err)
	}
	c := &s.Config
	for key, v := range values {
		var err error
		switch key {
		case AnnotationSeed:
			c.Seed, err = strconv.ParseUint(v, 10, 64)
		case AnnotationEpoch:
			c.Epoch, err = time.Parse(time.RFC3339Nano, v)
			s.EpochSet = true
		case AnnotationCPUs:
			c.CPUs, err = strconv.Atoi(v)
		case AnnotationMemory:
			c.MemBytes, err = strconv.ParseUint(v, 10, 64)
		case AnnotationHostname:
			c.Hostname = v
		case AnnotationLog, AnnotationDigests, AnnotationAudit, AnnotationKey, AnnotationInput:
			if !filepath.IsAbs(v) {
				err = fmt.Errorf("want an absolute path on the host")
			}
			*map[string]*string{AnnotationLog: &s.Log, AnnotationDigests: &s.Digests, AnnotationAudit: &s.Audit, AnnotationKey: &s.Key, AnnotationInput: &s.Input}[key] = v
		case AnnotationLogd:
			if u, perr := url.Parse(v); perr != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				err = fmt.Errorf("want logd's URL, http://HOST:PORT")
			}
			s.Logd = v
		case AnnotationRequire:
			s.Require, err = hostcap.ParseRequire(v)
		case AnnotationPort:
			if s.Port, err = strconv.Atoi(v); err == nil && (s.Port < 1 || s.Port > 65535) {
				err = fmt.Errorf("want a TCP port, 1 to 65535")
			}
		case AnnotationStream, AnnotationReplica:
			*map[string]*string{AnnotationStream: &s.Stream, AnnotationReplica: &s.Replica}[key] = v
		default:
			continue
		}
		if err != nil {
			return bad(key, v, err)
		}
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%s%v", where, err)
	}
	return nil
}
