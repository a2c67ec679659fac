package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/lockstep-run/lockstep/hub"
	"github.com/lockstep-run/lockstep/replicate"
	"github.com/lockstep-run/lockstep/serve"
	"github.com/spf13/pflag"
)

const registerUsage = `Usage: lockstep register [FLAGS] NAME IMAGE[@DIGEST] [-- CMD ARGS...]

Registers a service at the hub: NAME runs IMAGE, pinned to its manifest
digest (sha256:...; without @DIGEST, the digest of IMAGE in the local
containerd is pinned), with CMD ARGS (default: the image's command) as
--replicas replicas. The registration is signed with --key, its owner's:
only that key may register NAME again, and only with a newer registration.
Providers refuse an image whose digest differs. See docs/hub.md.

Flags:
`

func registerMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("register", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	hf := addHubFlags(fs)
	replicas := fs.Int("replicas", 3, "run it as `N` replicas on distinct providers")
	allowNet := fs.String("allow-net", "", "let it connect out, through the guard, to `HOST:PORT,...` (docs/egress.md); the default allows none")
	require := requireFlag(fs)
	port := fs.Int("port", 0, "a network service listening on TCP `PORT` in each replica: lockstep serve NAME serves it at the hub")
	address := fs.String("address", "/run/containerd/containerd.sock", "the local containerd's `SOCKET`, to find IMAGE's digest when none is given")
	ns := fs.String("namespace", "lockstep", "containerd `NAMESPACE`")
	fs.Usage = func() { io.WriteString(stderr, registerUsage); fs.PrintDefaults() }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() < 2 {
		return errorf(stderr, exitUsage, "register: want NAME IMAGE[@DIGEST] [-- CMD ARGS...] (lockstep register --help)")
	}
	req, code := parseRequire("register", *require, stderr)
	if code >= 0 {
		return code
	}
	if _, err := serve.ParsePolicy(*allowNet); err != nil {
		return errorf(stderr, exitUsage, "register: %v", err)
	}
	r := hub.Registration{Name: fs.Arg(0), Replicas: *replicas, AllowNet: *allowNet, Require: req, Port: *port}
	if len(fs.Args()) > 2 {
		r.Args = fs.Args()[2:]
	}
	image := fs.Arg(1)
	if i := strings.LastIndex(image, "@"); i > 0 {
		r.Image, r.Digest = image[:i], image[i+1:]
	} else {
		p := &replicate.Local{Containerd: *address, Namespace: *ns}
		d, err := p.ImageDigest(context.Background(), image)
		p.Close()
		if err != nil {
			return errorf(stderr, exitUsage, "register: %s has no @DIGEST and the local containerd (--address %s) cannot tell it: %v; give IMAGE@sha256:... (ctr -n %s images ls shows it)", image, *address, err, *ns)
		}
		r.Image, r.Digest = image, d
	}
	c, key, err := hf.dial()
	if err != nil {
		return errorf(stderr, exitUsage, "register: %v", err)
	}
	s := hub.Sign(r, key)
	if err := s.Check(); err != nil {
		return errorf(stderr, exitUsage, "register: %v", err)
	}
	if err := c.Register(context.Background(), s); err != nil {
		return errorf(stderr, exitRuntime, "register: %v", err)
	}
	fmt.Fprintf(stderr, "lockstep register: %s is %s@%s, %d replicas, owned by %s\n", s.Name, s.Image, s.Digest, s.Replicas, s.Owner)
	return 0
}
