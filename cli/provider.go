package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"sync/atomic"
	"time"

	"errors"
	"fmt"
	"github.com/lockstep-run/lockstep/hostcap"
	"github.com/lockstep-run/lockstep/hub"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
	"github.com/spf13/pflag"
)

const providerUsage = `Usage: lockstep provider --logd ADDR --key FILE [FLAGS]
       lockstep provider --hub ID@HOST:PORT --key FILE --listen ADDR [FLAGS]

Serves replicas to lockstep run --provider: for each job it follows the
job's stream in the logd at --logd (verifying every checkpoint against the
stream's key), runs the container on this host's containerd with the
Lockstep runtime, streams its output back with back-pressure, and reports
the signed digest of that output to logd with this provider's key (--key,
made if missing). The protocol is in docs/run.md.

With --hub, the provider announces itself to the hub (its address, key,
what its host cannot make deterministic, its load) every few seconds,
reads the logs from the hub, and serves jobs over TLS only to the hub's
key (and to --trust keys): docs/hub.md.

Flags:
`

func providerMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("provider", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:7440", "serve jobs on `ADDR`")
	logdAddr := fs.String("logd", "", "the logd to read streams from and report to (`ADDR`, required)")
	keyFile := fs.String("key", "", "this provider's private key `FILE` (made if missing; required)")
	name := fs.String("name", "", "this provider's name in verdicts (default: the host name)")
	address := fs.String("address", "/run/containerd/containerd.sock", "containerd's `SOCKET`")
	ns := fs.String("namespace", "lockstep", "containerd `NAMESPACE`")
	tokenFile := fs.String("token-file", "", "run jobs only for clients that present the token in `FILE` (lockstep run --provider-token-file); without it, anyone who can reach --listen can run containers here")
	annotations := fs.StringArray("annotation", nil, "add `KEY=VALUE` to every container's annotations (this host's settings, e.g. io.lockstep.memory=512M)")
	hubAddr := fs.String("hub", "", "work for the hub at `ID@HOST:PORT`: announce this provider there, read the logs from it, take jobs over TLS from it only")
	advertise := fs.String("advertise", "", "with --hub: the `ADDR` the hub reaches this provider at (default --listen)")
	trust := fs.StringArray("trust", nil, "with --hub: take jobs also from the guard whose key is `ID`")
	fs.Usage = func() { io.WriteString(stderr, providerUsage); fs.PrintDefaults() }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	switch {
	case fs.NArg() > 0:
		return errorf(stderr, exitUsage, "provider: takes no arguments, got %q (lockstep provider --help lists the flags)", fs.Args())
	case *logdAddr == "" && *hubAddr == "":
		return errorf(stderr, exitUsage, "provider: --logd ADDR is required: the logd the jobs' streams are read from (or --hub)")
	case *logdAddr != "" && *hubAddr != "":
		return errorf(stderr, exitUsage, "provider: --hub and --logd: the hub serves the logs; give one")
	case *hubAddr == "" && (*advertise != "" || len(*trust) > 0):
		return errorf(stderr, exitUsage, "provider: --advertise and --trust go with --hub")
	}
	key, err := loadPrivateKey(*keyFile, true)
	if err != nil {
		return errorf(stderr, exitUsage, "provider: %v", err)
	}
	token, err := readToken(*tokenFile)
	if err != nil {
		return errorf(stderr, exitUsage, "provider: %v", err)
	}
	ann := map[string]string{}
	for _, a := range *annotations {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return errorf(stderr, exitUsage, "provider: --annotation %q: want KEY=VALUE", a)
		}
		ann[k] = v
	}
	if *name == "" {
		*name, _ = os.Hostname()
	}
	// Said once here; each job's leaks go into its reports and verdict,
	// and a job that requires a leaking source is refused.
	if code := hostGuard("provider", nil, stderr); code >= 0 {
		return code
	}
	p := &replicate.Local{ProviderName: *name, Containerd: *address, Namespace: *ns, Key: key, Annotations: ann}
	defer p.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return errorf(stderr, exitRuntime, "provider: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	jobs := &counting{Provider: p}
	if *hubAddr != "" {
		if *advertise == "" {
			*advertise = ln.Addr().String()
		}
		ln, err = forHub(ctx, ln, p, jobs, key, *hubAddr, *advertise, *trust, stderr)
		if err != nil {
			return errorf(stderr, exitUsage, "provider: %v", err)
		}
		*logdAddr = "the hub"
	} else {
		p.Logd = logd.NewClient(*logdAddr)
	}
	if err := batchScheduling(); err != nil {
		fmt.Fprintf(stderr, "provider: warning: %v (replicas are fed, slower)\n", err)
	}
	srv := &http.Server{Handler: replicate.Handler(jobs, token)}
	go func() { <-ctx.Done(); srv.Close() }()
	fmt.Fprintf(stderr, "lockstep provider %s: serving on %s, logd %s, containerd %s\n", *name, ln.Addr(), *logdAddr, *address)
	if token == "" && *hubAddr == "" {
		fmt.Fprintf(stderr, "lockstep provider %s: no --token-file: anyone who can reach %s can run containers here\n", *name, ln.Addr())
	}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return errorf(stderr, exitRuntime, "provider: %v", err)
	}
	return 0
}

// readToken reads a shared token from file ("" for none): its first line,
// at least 16 characters.
func readToken(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	t, _, _ := strings.Cut(string(b), "\n")
	if t = strings.TrimSpace(t); len(t) < 16 {
		return "", fmt.Errorf("token in %s: %d characters; want at least 16 (e.g. head -c 32 /dev/urandom | base64 > %s)", file, len(t), file)
	}
	return t, nil
}

// forHub makes the provider the hub's: the logs come from the hub, jobs
// are taken over TLS from the hub's key (and trust's) only, and the
// provider announces itself now and every announceEvery.
func forHub(ctx context.Context, ln net.Listener, p *replicate.Local, jobs *counting, key ed25519.PrivateKey, hubAddr, advertise string, trust []string, stderr io.Writer) (net.Listener, error) {
	hubKey, _, err := hub.ParseAddr(hubAddr)
	if err != nil {
		return nil, fmt.Errorf("--hub: %w", err)
	}
	guards := []ed25519.PublicKey{hubKey}
	for _, t := range trust {
		k, err := hub.ParseID(t)
		if err != nil {
			return nil, fmt.Errorf("--trust: %w", err)
		}
		guards = append(guards, k)
	}
	c, err := hub.Dial(hubAddr, key)
	if err != nil {
		return nil, err
	}
	p.Logd = c.Logd()
	cfg, err := hub.ServerTLS(key, func(k ed25519.PublicKey) error {
		for _, g := range guards {
			if g.Equal(k) {
				return nil
			}
		}
		return fmt.Errorf("%s is not the hub nor a trusted guard: this provider takes jobs from them only", hub.ID(k))
	})
	if err != nil {
		return nil, err
	}
	cfg.NextProtos = []string{"http/1.1"}
	leaks, _ := hostcap.Leaks()
	announce := func() error {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return c.Announce(actx, hub.Provider{Name: p.ProviderName, Addr: advertise, Leaks: leaks, Running: int(jobs.n.Load())})
	}
	if err := announce(); err != nil {
		fmt.Fprintf(stderr, "lockstep provider %s: warning: %v (trying again every %v)\n", p.ProviderName, err, announceEvery)
	}
	go func() {
		t := time.NewTicker(announceEvery)
		defer t.Stop()
		failing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			err := announce()
			if err != nil && !failing {
				fmt.Fprintf(stderr, "lockstep provider %s: warning: %v\n", p.ProviderName, err)
			}
			failing = err != nil
		}
	}()
	fmt.Fprintf(stderr, "lockstep provider %s: key %s, working for hub %s\n", p.ProviderName, hub.ID(key.Public().(ed25519.PublicKey)), hubAddr)
	return tls.NewListener(ln, cfg), nil
}

// announceEvery is how often a provider tells the hub it is alive.
const announceEvery = 5 * time.Second

// counting counts the replicas a provider runs now (its load, announced
// to the hub).
type counting struct {
	replicate.Provider
	n atomic.Int64
}

func (c *counting) Run(ctx context.Context, j replicate.Job, out replicate.Sink) (replicate.Result, error) {
	c.n.Add(1)
	defer c.n.Add(-1)
	return c.Provider.Run(ctx, j, out)
}
