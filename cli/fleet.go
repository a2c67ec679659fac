package cli

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/lockstep-run/lockstep/hub"
	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
	"github.com/lockstep-run/lockstep/serve"
	"github.com/spf13/pflag"
)

// fleet is what lockstep run, pipe and serve share: how many replicas,
// where they run, the log they read, and how the verdict is shown.
type fleet struct {
	name       string
	replicas   *int
	seed       *uint64
	address    *string
	ns         *string
	providers  *[]string
	hf         hubFlags // --hub and --key: the hub, and this party's key (for providers too)
	logdAddr   *string
	tick       *time.Duration
	asJSON     *bool
	require    *string
	stderrMode *string
	allowNet   *string
	fetch      *string

	required []string      // parsed from require by check
	allow    *serve.Policy // parsed from allowNet by check
}

func addFleetFlags(name string, fs *pflag.FlagSet) *fleet {
	return &fleet{
		name:       name,
		replicas:   fs.Int("replicas", 3, "number of replicas"),
		seed:       fs.Uint64("seed", 0, "the seed of every replica's entropy (the log's first entry)"),
		address:    fs.String("address", "/run/containerd/containerd.sock", "the local containerd's `SOCKET`"),
		ns:         fs.String("namespace", "lockstep", "containerd `NAMESPACE`"),
		providers:  fs.StringArray("provider", nil, "run replicas on the lockstep provider at `ID@HOST:PORT` (it prints its ID; repeat for each host; replicas are placed in turn)"),
		hf:         addHubFlags(fs),
		logdAddr:   fs.String("logd", "", "use the logd at `ADDR` (default: an embedded one, with its data in a temporary directory)"),
		tick:       fs.Duration("tick", 10*time.Millisecond, "the log clock's resolution: while a replica waits for a time, a tick entry is appended once the clock passes it, at most one per `DURATION` (1ms to 1s)"),
		asJSON:     fs.Bool("json", false, "print the verdict as JSON on stderr"),
		require:    requireFlag(fs),
		allowNet:   fs.String("allow-net", "", "let the program connect out of the run, through the guard, to `HOST:PORT,...` (an address, a CIDR network or a name, and a port or *); the default allows none (docs/egress.md)"),
		fetch:      fs.String("fetch", "guard", "who makes an outbound TCP connection (--allow-net): guard (the guard, once) or providers (every replica's provider, the replicas getting what a majority of them read alike: for plain-text protocols; docs/egress.md)"),
		stderrMode: fs.String("stderr", "majority", "the replicas' stderr to show after the run: majority (what most replicas wrote; the vote is on stdout), replica-N, or none"),
	}
}

// check checks the flags; it returns an exit status, or -1 if they are
// good.
func (f *fleet) check(stderr io.Writer) int {
	switch {
	case *f.replicas < 1:
		return errorf(stderr, exitUsage, "%s: --replicas %d: want at least 1 (3 or more to name an odd replica)", f.name, *f.replicas)
	case *f.tick < time.Millisecond || *f.tick > time.Second:
		return errorf(stderr, exitUsage, "%s: --tick %v: want 1ms to 1s", f.name, *f.tick)
	}
	required, code := parseRequire(f.name, *f.require, stderr)
	if code >= 0 {
		return code
	}
	f.required = required
	if err := checkStderrMode(*f.stderrMode, *f.replicas); err != nil {
		return errorf(stderr, exitUsage, "%s: --stderr: %v", f.name, err)
	}
	allow, err := serve.ParsePolicy(*f.allowNet)
	if err != nil {
		return errorf(stderr, exitUsage, "%s: %v", f.name, err)
	}
	f.allow = allow
	if *f.fetch != "guard" && *f.fetch != "providers" {
		return errorf(stderr, exitUsage, "%s: --fetch is guard or providers, not %q", f.name, *f.fetch)
	}
	if len(*f.providers) > 0 && *f.logdAddr == "" {
		return errorf(stderr, exitUsage, "%s: --provider needs --logd ADDR, the logd the providers read the log from", f.name)
	}
	return -1
}

// open connects to the log (or starts an embedded logd) and the
// providers (or the local containerd). It returns an exit status, or -1
// and what close undoes.
func (f *fleet) open(stderr io.Writer) (client *logd.Client, ps []replicate.Provider, close func(), code int) {
	if len(*f.providers) > 0 {
		key, err := f.hf.loadKey()
		if err != nil {
			return nil, nil, nil, errorf(stderr, exitUsage, "%s: %v", f.name, err)
		}
		for _, a := range *f.providers {
			p, err := remote(a, key)
			if err != nil {
				return nil, nil, nil, errorf(stderr, exitUsage, "%s: --provider %s: %v", f.name, a, err)
			}
			ps = append(ps, p)
		}
	}
	client, stopLogd, err := openLogd(*f.logdAddr)
	if err != nil {
		return nil, nil, nil, errorf(stderr, exitRuntime, "%s: %v", f.name, err)
	}
	if len(ps) > 0 {
		return client, ps, stopLogd, -1
	}
	if code := hostGuard(f.name, f.required, stderr); code >= 0 {
		stopLogd()
		return nil, nil, nil, code
	}
	local := localProvider(*f.address, *f.ns, client)
	return client, []replicate.Provider{local}, func() { local.Close(); stopLogd() }, -1
}

// remote is the provider at pinned (ID@HOST:PORT), reached over TLS as
// key, this party's.
func remote(pinned string, key ed25519.PrivateKey) (*replicate.Remote, error) {
	k, addr, err := hub.ParseAddr(pinned)
	if err != nil {
		return nil, err
	}
	c, err := hub.HTTPClient(key, k)
	if err != nil {
		return nil, err
	}
	return &replicate.Remote{Addr: "https://" + addr, HTTP: c, Label: addr}, nil
}

// guard is the run's guard: its outbound connections (egress) go
// through it, and a served stream's clients too (ln; nil for a run).
// With --fetch providers, each replica's provider (of ps, placed in turn)
// makes its outbound connections.
func (f *fleet) guard(ln net.Listener, ps []replicate.Provider, stderr io.Writer) *serve.Gateway {
	g := serve.New(ln, *f.replicas)
	g.Allow = f.allow
	if *f.fetch == "providers" {
		for i := range *f.replicas {
			g.Fetch = append(g.Fetch, ps[i%len(ps)].(replicate.Fetcher))
		}
	}
	g.Log = func(s string) { fmt.Fprintf(stderr, "lockstep %s: %s\n", f.name, s) }
	return g
}

// options are a run's options from the flags: replicas of image running
// args, on ps, reading a new stream of client's.
func (f *fleet) options(ps []replicate.Provider, client *logd.Client, image string, args []string) replicate.Options {
	id := make([]byte, 6)
	rand.Read(id)
	return replicate.Options{
		Providers: ps, Image: image, Args: args,
		Replicas: *f.replicas, Seed: *f.seed, Logd: client, Stream: f.name + "-" + hex.EncodeToString(id),
		Require: f.required, TickEvery: *f.tick,
	}
}

// show prints the replicas' stderr and the verdict; with --json the
// verdict is an object with lockstep's exit status and its kind
// (exitKinds).
func (f *fleet) show(stderr io.Writer, v replicate.Verdict, status int) {
	f.showNamed(stderr, v, status, "", link{})
}

// showNamed is show for a run the hub guarded: the JSON also gives the
// run's stream and the bytes on the requestor's link to the hub.
func (f *fleet) showNamed(stderr io.Writer, v replicate.Verdict, status int, stream string, l link) {
	showStderr(stderr, f.name, *f.stderrMode, v)
	if !*f.asJSON {
		printVerdict(stderr, f.name, v)
		return
	}
	kind := "exit"
	switch {
	case v.HostLimited:
		kind = "host_limited"
	case !v.Agreed:
		kind = "diverged"
	}
	var hubLink *link
	if stream != "" {
		hubLink = &l
	}
	printJSON(stderr, struct {
		ExitKind string `json:"exit_kind"`
		Status   int    `json:"status"`
		Stream   string `json:"stream,omitempty"`
		Link     *link  `json:"hub_link,omitempty"`
		replicate.Verdict
	}{kind, status, stream, hubLink, v})
}

// fail ends a run that gave no verdict (kind: setup, interrupted,
// stdout_closed) with one line and, with --json, an object
// {"exit_kind", "status", "error"}.
func (f *fleet) fail(stderr io.Writer, status int, kind string, err error) int {
	errorf(stderr, status, "%s: %v", f.name, err)
	if *f.asJSON {
		printJSON(stderr, map[string]any{"exit_kind": kind, "status": status, "error": err.Error()})
	}
	return status
}
