//go:build !linux

package seccomp

import "errors"

// ErrUnsupported is returned on systems without seccomp.
var ErrUnsupported = errors.New("seccomp: not supported on this system")

// Install is not supported off Linux.
func Install(rules []Rule) (int, error) { return -1, ErrUnsupported }
