//go:build !linux

package hostcap

import "errors"

// ErrUnsupported: Lockstep runs on Linux only.
var ErrUnsupported = errors.New("hostcap: Linux only")

func measureLeaks() ([]string, error) { return nil, ErrUnsupported }

// Doctor measures nothing off Linux.
func Doctor(Options) Report { return Report{} }

// IA32Emulation is not measured off Linux.
func IA32Emulation() (bool, error) { return false, ErrUnsupported }
