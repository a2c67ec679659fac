package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/logd/wire"
	"github.com/lockstep-run/lockstep/replicate"
	"github.com/lockstep-run/lockstep/serve"
)

// useState is lockstep serve --state DIR: DIR keeps the served stream's
// name and its signing key, so that a gateway started again with the same
// DIR (it was killed, its host restarted) resumes the stream where its
// log ends, instead of starting the service anew. It sets o (and g) up
// for a new stream or for the one in DIR.
func useState(ctx context.Context, dir string, client *logd.Client, o *replicate.Options, g *serve.Gateway, stderr io.Writer) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	namePath, keyPath := filepath.Join(dir, "stream"), filepath.Join(dir, "key")
	b, err := os.ReadFile(namePath)
	if errors.Is(err, os.ErrNotExist) {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return err
		}
		os.Remove(keyPath) // a key without its stream's name: the stream was never made
		if err := wire.WritePrivateKey(keyPath, key); err != nil {
			return err
		}
		o.StreamKey = key
		return os.WriteFile(namePath, []byte(o.Stream+"\n"), 0o600)
	}
	if err != nil {
		return err
	}
	stream := strings.TrimSpace(string(b))
	key, err := wire.ReadPrivateKey(keyPath)
	if err != nil {
		return fmt.Errorf("%s names stream %s, but its key: %w", namePath, stream, err)
	}
	r, err := replicate.ReadResumed(ctx, client, stream, key)
	if err != nil {
		return fmt.Errorf("%w (--state %s: lockstep serve --join %s replays it; remove %s to start a new stream)", err, dir, stream, dir)
	}
	cfg := r.Config
	if err := cfg.CheckReplay(o.Image, "", o.Args); err != nil {
		return fmt.Errorf("--state %s holds stream %s: %w", dir, stream, err)
	}
	if cfg.Port != o.Port {
		return fmt.Errorf("--state %s holds stream %s, served on port %d, not --port %d", dir, stream, cfg.Port, o.Port)
	}
	o.Stream, o.Resume, o.Digest = stream, r, cfg.Digest
	o.NameFrom = reportedNames(ctx, client, stream)
	g.Resume(r.LastConn, r.Last, r.Dialed, o.NameFrom)
	fmt.Fprintf(stderr, "lockstep serve: resuming stream %s after its entry %d (its gateway stopped before the stop entry); connections open then, closed now: %d; replicas from replica-%d on replay the log, then serve\n", stream, r.Size-1, len(r.Open), o.NameFrom)
	return nil
}

// reportedNames is the first replica number no report of the stream
// holds (replica-N): a resumed stream's replicas are new ones.
func reportedNames(ctx context.Context, client *logd.Client, stream string) int {
	v, err := client.Verdict(ctx, stream, 1)
	if err != nil {
		return 0
	}
	from := 0
	for _, name := range v.Replicas {
		if n, err := strconv.Atoi(strings.TrimPrefix(name, "replica-")); err == nil && strings.HasPrefix(name, "replica-") {
			from = max(from, n+1)
		}
	}
	return from
}
