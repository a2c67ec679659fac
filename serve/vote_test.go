package serve

import (
	"io"
	"net"
	"strings"
	"testing"
)

// client is the far end of a connection's writer: what the client got.
func client(t *testing.T, n int) (*conn, *votes, chan string) {
	a, b := net.Pipe()
	got := make(chan string, 1)
	go func() {
		p, _ := io.ReadAll(b)
		got <- string(p)
	}()
	t.Cleanup(func() { a.Close(); b.Close() })
	return newConn(1, n, newWriter(a)), &votes{need: n/2 + 1, odd: make([]string, n), gone: make([]bool, n)}, got
}

// apply runs the steps "rN:bytes" (replica N sent bytes), "fN" (it
// closed) and "gN" (it ended), and returns the replicas found odd.
func apply(c *conn, v *votes, steps ...string) map[int]string {
	odd := map[int]string{}
	for _, s := range steps {
		r := int(s[1] - '0')
		if !v.in(r) {
			continue
		}
		var found map[int]string
		switch s[0] {
		case 'r':
			found = c.add(v, r, []byte(s[3:]))
		case 'f':
			found = c.finish(v, r)
		case 'g':
			v.gone[r] = true
			found = c.vote(v)
		}
		for k, why := range found {
			odd[k], v.odd[k] = why, why
		}
	}
	return odd
}

func TestVote(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []string
		want  string // what the client gets
		odd   string // replicas named odd, and a word of why
	}{
		{"same bytes, cut differently", []string{"r0:HTTP/1.1 2", "r1:HTTP/", "r2:HTTP/1.1 200 OK", "r1:1.1 200 OK", "r0:00 OK", "f0", "f1", "f2"}, "HTTP/1.1 200 OK", ""},
		{"one differs", []string{"r0:hello", "r1:hellx", "r2:hello", "f0", "f1", "f2"}, "hello", "1 differs from the majority's at byte 4"},
		{"one behind, then differs", []string{"r0:abcdef", "r1:abcdef", "f0", "f1", "r2:abcXef", "f2"}, "abcdef", "2 differs from the majority's at byte 3"},
		{"one behind, same", []string{"r0:abcdef", "r1:abcdef", "f0", "f1", "r2:abc", "r2:def", "f2"}, "abcdef", ""},
		{"one ends short", []string{"r0:abcdef", "r1:abc", "f1", "r2:abcdef", "f0", "f2"}, "abcdef", "1 ended after 3"},
		{"one says more", []string{"r0:abc", "r1:abc", "f0", "f1", "r2:abcdef"}, "abc", "2 more than the majority's 3-byte"},
		{"one gone", []string{"r0:abc", "g1", "r2:abc", "f0", "f2"}, "abc", ""},
		{"two disagree, the third decides", []string{"r0:ab1", "r1:ab2", "r2:ab2", "f0", "f1", "f2"}, "ab2", "0 differs from the majority's at byte 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, v, got := client(t, 3)
			odd := apply(c, v, tc.steps...)
			if !c.ended {
				t.Fatalf("the response did not end; released %d bytes", c.sent)
			}
			if g := <-got; g != tc.want {
				t.Errorf("the client got %q, want %q", g, tc.want)
			}
			var desc []string
			for r, why := range odd {
				desc = append(desc, string(rune('0'+r))+" "+why)
			}
			if tc.odd == "" && len(odd) > 0 || tc.odd != "" && (len(odd) != 1 || !strings.HasPrefix(desc[0], tc.odd[:1]) || !strings.Contains(desc[0], tc.odd[2:])) {
				t.Errorf("odd: %q, want %q", desc, tc.odd)
			}
		})
	}
}

// Without a majority nothing is released; once every replica in the vote
// has said its next byte and no majority says the same, the response is
// cut short there (the client is not held forever), and not before.
func TestVoteNoMajority(t *testing.T) {
	c, v, _ := client(t, 3)
	apply(c, v, "r0:abc", "r1:xyz")
	if c.sent != 0 || c.ended {
		t.Fatalf("released %d bytes, ended %v, while replica 2 may yet decide", c.sent, c.ended)
	}
	apply(c, v, "g2")
	if c.sent != 0 || !c.split || !c.ended {
		t.Fatalf("released %d bytes, split %v: two replicas left that disagree", c.sent, c.split)
	}
	c, v, got := client(t, 3)
	apply(c, v, "r0:ab1", "r1:ab2", "r2:ab", "r2:3", "r0:more")
	if !c.split || c.sent != 2 {
		t.Fatalf("three different answers: split %v after %d bytes", c.split, c.sent)
	}
	apply(c, v, "f0", "f1", "f2")
	if g := <-got; g != "ab" {
		t.Errorf("the client got %q, want the agreed %q", g, "ab")
	}
	if !c.settled(v) {
		t.Error("a split connection every replica closed is not settled")
	}
}
