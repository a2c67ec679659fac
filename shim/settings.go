package shim

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

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
)

// Settings are one container's determinism settings.
type Settings struct {
	Config  virt.Config
	Log     string // exec log path on the host, "" for none
	Digests string // where to write the digest chains, "" for none
	Audit   string // where to write the audit, "" for none
}

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
			return fmt.Errorf("runtime options %s: unknown key %q (want seed, epoch, cpus, memory, hostname, log, digests, audit)", name, k)
		}
		values[key] = fmt.Sprint(tree.Get(k))
	}
	return s.apply(values, "runtime options "+name+": ")
}

var optionKeys = map[string]string{
	"seed": AnnotationSeed, "epoch": AnnotationEpoch, "cpus": AnnotationCPUs,
	"memory": AnnotationMemory, "hostname": AnnotationHostname, "log": AnnotationLog,
	"digests": AnnotationDigests, "audit": AnnotationAudit,
}

// ApplyAnnotations applies the io.lockstep.* annotations.
func (s *Settings) ApplyAnnotations(a map[string]string) error {
	return s.apply(a, "annotation ")
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
		case AnnotationCPUs:
			c.CPUs, err = strconv.Atoi(v)
		case AnnotationMemory:
			c.MemBytes, err = strconv.ParseUint(v, 10, 64)
		case AnnotationHostname:
			c.Hostname = v
		case AnnotationLog, AnnotationDigests, AnnotationAudit:
			if !filepath.IsAbs(v) {
				err = fmt.Errorf("want an absolute path on the host")
			}
			*map[string]*string{AnnotationLog: &s.Log, AnnotationDigests: &s.Digests, AnnotationAudit: &s.Audit}[key] = v
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
