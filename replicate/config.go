package replicate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/namespaces"
	"github.com/lockstep-run/lockstep/logd"
)

// Config is a stream's config entry, the first after its seed: what ran
// on the log, so that a replay runs the same (CheckReplay), and, for a
// served stream, the service's port.
type Config struct {
	Image string `json:"image,omitempty"`
	// Digest is the image's manifest digest where the guard's own
	// containerd has the image; a provider whose image differs refuses
	// the job.
	Digest string   `json:"digest,omitempty"`
	Args   []string `json:"args,omitempty"` // nil: the image's command
	Port   int      `json:"port,omitempty"`
	// Replicas is how many replicas the guard started: a replica that
	// joins later (lockstep serve --join) waits for a majority of their
	// final reports to compare its own with.
	Replicas int `json:"replicas,omitempty"`
}

// ReadConfig finds a stream's config entry: ok is false for a stream
// that has none (recorded before they were written).
func ReadConfig(es []logd.Entry) (Config, bool, error) {
	for _, e := range es {
		if e.Kind == logd.KindConfig {
			var c Config
			if err := json.Unmarshal(e.Payload, &c); err != nil || c.Port < 0 || c.Port > 65535 {
				return Config{}, false, fmt.Errorf("%w: entry %d: a config entry that is not one: %q", logd.ErrBadLog, e.Seq, e.Payload)
			}
			return c, true, nil
		}
	}
	return Config{}, false, nil
}

// CheckReplay compares a replay's image and command with the recorded
// ones: an error says what differs. An image of another name with the
// recorded digest is the same image.
func (c Config) CheckReplay(image, digest string, args []string) error {
	sameImage := image == c.Image || (digest != "" && digest == c.Digest)
	if !sameImage || !slices.Equal(args, c.Args) {
		return fmt.Errorf("the log was recorded for %s, not %s: replay it with the recorded image and command (or give neither)", c.command(c.Image, c.Args), c.command(image, args))
	}
	if c.Digest != "" && digest != "" && digest != c.Digest {
		return fmt.Errorf("image %s here is %s, the recorded run's was %s: import the recorded image", image, digest, c.Digest)
	}
	return nil
}

func (Config) command(image string, args []string) string {
	if len(args) == 0 {
		return image + " (its own command)"
	}
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = a
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$;&|<>*?()") {
			quoted[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return image + " -- " + strings.Join(quoted, " ")
}

// imageDigest is the manifest digest of image on the first provider
// that can say (a Local one), or "".
func imageDigest(ctx context.Context, ps []Provider, image string) string {
	for _, p := range ps {
		if l, ok := p.(*Local); ok {
			d, _ := l.ImageDigest(ctx, image)
			return d
		}
	}
	return ""
}

// ImageDigest is the manifest digest of image in the provider's
// containerd.
func (p *Local) ImageDigest(ctx context.Context, image string) (string, error) {
	client, err := p.containerd()
	if err != nil {
		return "", err
	}
	img, err := client.GetImage(namespaces.WithNamespace(ctx, p.Namespace), image)
	if err != nil {
		return "", err
	}
	return img.Target().Digest.String(), nil
}

// StreamConfig reads the config entry of a stream in c, verified under
// the key logd holds for it, and returns it and that key: what a replica
// that joins the stream runs, and trusts.
func StreamConfig(ctx context.Context, c *logd.Client, stream string) (Config, string, error) {
	info, err := c.Info(ctx, stream)
	switch {
	case errors.Is(err, logd.ErrNoStream):
		return Config{}, "", fmt.Errorf("no stream %s on the logd at %s (lockstep serve prints its stream's name when it starts)", stream, c.Base)
	case err != nil:
		return Config{}, "", fmt.Errorf("the logd at %s: %w (is it running? give its address with --logd)", c.Base, err)
	}
	pub, err := logd.DecodeKey(info.Key)
	if err != nil {
		return Config{}, "", err
	}
	f, err := c.Follow(ctx, stream, pub)
	if err != nil {
		return Config{}, "", err
	}
	var es []logd.Entry
	for len(es) < 2 {
		more, err := f.Next(ctx, 10*time.Second)
		if err != nil {
			return Config{}, "", fmt.Errorf("stream %s: %w", stream, err)
		}
		if len(more) == 0 {
			return Config{}, "", fmt.Errorf("stream %s has no config entry after 10 s: it is not a stream lockstep run or serve made", stream)
		}
		es = append(es, more...)
	}
	cfg, ok, err := ReadConfig(es[:2])
	if err != nil {
		return Config{}, "", err
	}
	if !ok {
		return Config{}, "", fmt.Errorf("stream %s has no config entry: it predates them, so a replica cannot learn what to run from it", stream)
	}
	return cfg, info.Key, nil
}
