package hub

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Registration is a service as its owner signed it (lockstep register).
type Registration struct {
	Name string `json:"name"`
	// Image is the image reference the providers run, pinned to Digest
	// (its manifest's): a provider whose image differs refuses the job.
	Image    string   `json:"image"`
	Digest   string   `json:"digest"`
	Args     []string `json:"args,omitempty"` // nil: the image's command
	Replicas int      `json:"replicas"`
	AllowNet string   `json:"allow_net,omitempty"` // the egress policy (--allow-net)
	Require  []string `json:"require,omitempty"`   // sources every provider must make deterministic
	// Port, for a network service (lockstep serve NAME): the TCP port it
	// listens on in each replica; the hub serves it at an address of its
	// own while the requestor keeps the run.
	Port  int    `json:"port,omitempty"`
	Owner string `json:"owner"` // the owner's ID: only it may register the name again
	// Made is when the owner signed it (Unix ns): the hub takes a
	// registration of a name only if it is newer than the one it holds,
	// so an old one sent again changes nothing.
	Made int64 `json:"made"`
}

// Service is a signed registration.
type Service struct {
	Registration
	Signature string `json:"signature"` // base64 ed25519 over signed()
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// signed is the text the owner signs: a domain line and the
// registration's JSON (whose field order Go fixes).
func (r Registration) signed() []byte {
	b, _ := json.Marshal(r)
	return append([]byte("lockstep registration v1\n"), b...)
}

// Sign makes the service of r, owned by key, signed now.
func Sign(r Registration, key ed25519.PrivateKey) Service {
	r.Owner = ID(key.Public().(ed25519.PublicKey))
	r.Made = time.Now().UnixNano()
	return Service{Registration: r, Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, r.signed()))}
}

// Check checks the service's fields and its owner's signature.
func (s Service) Check() error {
	switch {
	case !nameRE.MatchString(s.Name):
		return fmt.Errorf("service name %q: want 1 to 63 of a-z 0-9 . _ - (starting with a letter or digit)", s.Name)
	case s.Image == "" || strings.ContainsAny(s.Image, " \n"):
		return fmt.Errorf("service %s: image %q: want an image reference", s.Name, s.Image)
	case !digestRE.MatchString(s.Digest):
		return fmt.Errorf("service %s: digest %q: want sha256: and 64 hex digits (the image's manifest digest: ctr images ls)", s.Name, s.Digest)
	case s.Replicas < 1 || s.Replicas > 15:
		return fmt.Errorf("service %s: %d replicas: want 1 to 15", s.Name, s.Replicas)
	case s.Port < 0 || s.Port > 65535:
		return fmt.Errorf("service %s: port %d: want 1 to 65535, or 0 for a program that is not a network service", s.Name, s.Port)
	}
	owner, err := ParseID(s.Owner)
	if err != nil {
		return fmt.Errorf("service %s: owner: %w", s.Name, err)
	}
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil || !ed25519.Verify(owner, s.Registration.signed(), sig) {
		return fmt.Errorf("service %s: the signature is not its owner's %s (forged or altered)", s.Name, s.Owner)
	}
	return nil
}

// replaces says whether s may replace old, the service of that name the
// hub holds.
func (s Service) replaces(old Service) error {
	switch {
	case s.Owner != old.Owner:
		return fmt.Errorf("service %s is owned by %s; it can be registered again only with that key", s.Name, old.Owner)
	case s.Made <= old.Made:
		return fmt.Errorf("service %s: this registration (signed %s) is not newer than the one held (signed %s): an old registration sent again is refused",
			s.Name, time.Unix(0, s.Made).UTC().Format(time.RFC3339Nano), time.Unix(0, old.Made).UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// ErrUnknown is the error of a name no service has.
var ErrUnknown = errors.New("no such service")

// unknown is the error for name, naming the close ones among names.
func unknown(name string, names []string) error {
	var close []string
	for _, n := range names {
		if d := distance(name, n); d <= max(1, len(name)/3) || strings.Contains(n, name) || strings.Contains(name, n) {
			close = append(close, n)
		}
	}
	switch {
	case len(close) > 0:
		return fmt.Errorf("%w %q; did you mean %s? (lockstep services lists them)", ErrUnknown, name, strings.Join(close, ", "))
	case len(names) == 0:
		return fmt.Errorf("%w %q: the hub has none registered (lockstep register NAME IMAGE@DIGEST -- CMD)", ErrUnknown, name)
	}
	return fmt.Errorf("%w %q (lockstep services lists the %d registered)", ErrUnknown, name, len(names))
}

// distance is the Levenshtein distance of a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
