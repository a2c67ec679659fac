package virt

import (
	"errors"
	"fmt"
	"time"
)

// Config fixes everything a run may observe of the world. Two runs with
// the same Config and the same inputs see the same values.
type Config struct {
	Seed     uint64    // seeds every entropy stream
	Epoch    time.Time // the wall clock's value at the first read
	CPUs     int       // processors reported (affinity, /proc, /sys)
	MemBytes uint64    // memory reported (sysinfo, /proc/meminfo)
	Hostname string    // uname nodename
}

// DefaultEpoch is the wall clock's start when none is given.
var DefaultEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// DefaultConfig is what `lockstep exec` uses without flags.
func DefaultConfig() Config {
	return Config{
		Seed:     0,
		Epoch:    DefaultEpoch,
		CPUs:     1,
		MemBytes: 4 << 30,
		Hostname: "lockstep",
	}
}

// Validate reports a Config that cannot describe a machine.
func (c Config) Validate() error {
	switch {
	case c.CPUs < 1 || c.CPUs > 64:
		return fmt.Errorf("cpus %d: want 1 to 64", c.CPUs)
	case c.MemBytes < 64<<20:
		return fmt.Errorf("memory %d bytes: want at least 64 MiB", c.MemBytes)
	case c.Hostname == "" || len(c.Hostname) > 64:
		return errors.New("hostname: want 1 to 64 bytes")
	case c.Epoch.Before(time.Unix(0, 0)):
		return fmt.Errorf("epoch %s is before 1970", c.Epoch)
	}
	return nil
}

// Equal reports whether two configurations describe the same world.
func (c Config) Equal(o Config) bool {
	return c.Seed == o.Seed && c.Epoch.Equal(o.Epoch) && c.CPUs == o.CPUs &&
		c.MemBytes == o.MemBytes && c.Hostname == o.Hostname
}
