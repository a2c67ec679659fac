package runner

import (
	"strings"
	"testing"
)

func TestFirstDifference(t *testing.T) {
	same := Output{Stdout: []byte("a\nb\n"), Stderr: []byte("e"), ExitCode: 3}
	if d := FirstDifference(same, same); d != "" {
		t.Fatalf("identical outputs reported different: %s", d)
	}
	cases := []struct {
		a, b Output
		want []string
	}{
		{Output{Stdout: []byte("one\ntwo\n")}, Output{Stdout: []byte("one\ntwX\n")},
			[]string{"stdout differs at byte 6 (line 2)", `run 1: "two"`, `run 2: "twX"`}},
		{Output{Stdout: []byte("abc")}, Output{Stdout: []byte("ab")},
			[]string{"stdout differs at byte 2 (line 1)", "(ends after 2 bytes)"}},
		{Output{Stderr: []byte("x")}, Output{Stderr: []byte("y")}, []string{"stderr differs at byte 0"}},
		{Output{ExitCode: 0}, Output{ExitCode: 1}, []string{"run 1 exited 0, run 2 exited 1"}},
	}
	for _, c := range cases {
		d := FirstDifference(c.a, c.b)
		for _, w := range c.want {
			if !strings.Contains(d, w) {
				t.Errorf("difference %q lacks %q", d, w)
			}
		}
	}
}
