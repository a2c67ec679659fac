//go:build !linux

package virt

import "os"

func pipeFull(*os.File) bool { return true }
