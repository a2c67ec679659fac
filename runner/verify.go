package runner

import (
	"bytes"
	"fmt"
	"strconv"
)

// Output is what one run printed and how it ended.
type Output struct {
	Stdout, Stderr []byte
	ExitCode       int
}

// FirstDifference describes where two runs' outputs first differ, or
// returns "" when they are identical.
func FirstDifference(a, b Output) string {
	if d := streamDifference("stdout", a.Stdout, b.Stdout); d != "" {
		return d
	}
	if d := streamDifference("stderr", a.Stderr, b.Stderr); d != "" {
		return d
	}
	if a.ExitCode != b.ExitCode {
		return fmt.Sprintf("exit status: run 1 exited %d, run 2 exited %d", a.ExitCode, b.ExitCode)
	}
	return ""
}

func streamDifference(name string, a, b []byte) string {
	if bytes.Equal(a, b) {
		return ""
	}
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	line := bytes.Count(a[:i], []byte("\n")) + 1
	return fmt.Sprintf("%s differs at byte %d (line %d):\n  run 1: %s\n  run 2: %s",
		name, i, line, lineAt(a, i), lineAt(b, i))
}

// lineAt quotes the line that holds byte i, or says the stream ended.
func lineAt(s []byte, i int) string {
	if i >= len(s) {
		return fmt.Sprintf("(ends after %d bytes)", len(s))
	}
	start := bytes.LastIndexByte(s[:i], '\n') + 1
	end := bytes.IndexByte(s[i:], '\n')
	if end < 0 {
		end = len(s)
	} else {
		end += i
	}
	const limit = 200
	if end-start > limit {
		start = max(start, i-limit/2)
		end = min(end, start+limit)
	}
	return strconv.Quote(string(s[start:end]))
}
