package wire

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// EncodeKey and DecodeKey are the text form of public keys.
func EncodeKey(k ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(k) }

func DecodeKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not an ed25519 public key (base64 of 32 bytes): %q", s)
	}
	return ed25519.PublicKey(b), nil
}

// ReadPrivateKey reads a private key file: one line "private BASE64", the
// base64 of the key's 32-byte seed (what WritePrivateKey writes).
func ReadPrivateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kind, v, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	if kind != "private" {
		return nil, fmt.Errorf("%s holds no private key (want a line \"private BASE64\")", path)
	}
	seed, err := DecodeKey(v)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// WritePrivateKey writes k to a new file at path, readable by its owner
// only. The file appears whole or not at all (it is written aside and
// linked into place), so that a process reading path never sees half a
// key; if path exists, the error is os.ErrExist.
func WritePrivateKey(path string, k ed25519.PrivateKey) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".key-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString("private " + EncodeKey(ed25519.PublicKey(k.Seed())) + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Link(f.Name(), path)
}

// Trace is a replica's I/O digest chains: the eBPF tracer's checkpoints of
// every stream it wrote (stdout, files, pipes, sockets; JSON, as
// ebpf.Checkpoint), reported by the shim when the container is deleted,
// signed by the replica. logd keeps them for lockstep diff; it does not
// read them.
type Trace struct {
	Stream      string          `json:"stream"`
	Replica     string          `json:"replica"`
	Key         string          `json:"key"` // the replica's ed25519 public key, base64
	Checkpoints json.RawMessage `json:"checkpoints"`
	// Leaks are the sources the replica's host could not make
	// deterministic (hostcap), so that a difference they explain is not
	// taken for a lie.
	Leaks []string `json:"leaks,omitempty"`
	Sig   []byte   `json:"sig"`
}

func (t *Trace) text() []byte {
	sum := sha256.Sum256(t.Checkpoints)
	b := fmt.Appendf(nil, "lockstep-log trace v1\n%s\n%s\n%x\n", t.Stream, t.Replica, sum)
	if len(t.Leaks) > 0 {
		b = fmt.Appendf(b, "leaks %s\n", strings.Join(t.Leaks, ","))
	}
	return b
}

// Sign signs t with the replica's key.
func (t *Trace) Sign(k ed25519.PrivateKey) {
	t.Key = EncodeKey(k.Public().(ed25519.PublicKey))
	t.Sig = ed25519.Sign(k, t.text())
}

// Verify checks t's signature by t.Key.
func (t *Trace) Verify() error {
	key, err := DecodeKey(t.Key)
	if err != nil {
		return err
	}
	if !ed25519.Verify(key, t.text(), t.Sig) {
		return fmt.Errorf("trace of %s: bad signature", t.Replica)
	}
	return nil
}

// PostTrace sends t to the logd at base (http://HOST:PORT).
func PostTrace(ctx context.Context, base string, t Trace) error {
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", strings.TrimRight(base, "/")+"/v1/streams/"+url.PathEscape(t.Stream)+"/traces", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var e struct{ Error string }
	if json.NewDecoder(resp.Body).Decode(&e) != nil || e.Error == "" {
		e.Error = resp.Status
	}
	return errors.New(e.Error)
}
