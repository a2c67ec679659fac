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
	"github.com/lockstep-run/lockstep/serve"
	"github.com/spf13/pflag"
)

const providerUsage = `Usage: lockstep provider --logd ADDR --key FILE --trust ID [FLAGS]
       lockstep provider --hub ID@HOST:PORT --key FILE --listen ADDR [FLAGS]

Serves replicas to lockstep run --provider: for each job it follows the
job's stream in the logd at --logd (verifying every checkpoint against the
stream's key), runs the container on this host's containerd with the
Lockstep runtime, streams its output back with back-pressure, and reports
the signed digest of that output to logd with this provider's key (--key,
made if missing). Jobs come over TLS in which both parties present their
ed25519 keys: the provider is ID@ADDR to its clients (its ID is printed at
start; lockstep id --key FILE prints it too), and it takes jobs only from
the keys given by --trust. The protocol is in docs/run.md.

With --hub, the provider announces itself to the hub (its address, key,
what its host cannot make deterministic, its load) every few seconds,
reads the logs from the hub, and takes jobs from the hub's key (and
--trust keys): docs/hub.md.

Flags:
`

func providerMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("provider", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:7440", "serve jobs on `ADDR`")
	logdAddr := fs.String("logd", "", "the logd to read streams from and report to (`ADDR`; or --hub)")
	keyFile := fs.String("key", "", "this provider's private key `FILE` (made if missing; required)")
	name := fs.String("name", "", "this provider's name in verdicts (default: the host name)")
	address := fs.String("address", "/run/containerd/containerd.sock", "containerd's `SOCKET`")
	ns := fs.String("namespace", "lockstep", "containerd `NAMESPACE`")
	annotations := fs.StringArray("annotation", nil, "add `KEY=VALUE` to every container's annotations (this host's settings, e.g. io.lockstep.memory=512M)")
	hubAddr := fs.String("hub", "", "work for the hub at `ID@HOST:PORT`: announce this provider there, read the logs from it, take jobs from it")
	advertise := fs.String("advertise", "", "with --hub: the `ADDR` the hub reaches this provider at (default --listen)")
	trust := fs.StringArray("trust", nil, "take jobs from the requestor or guard whose key is `ID` (repeat for each; lockstep id prints a key's ID)")
	anyone := fs.Bool("trust-anyone", false, "take jobs from any key (a test host, reachable only by its users)")
	allowFetch := fs.String("allow-fetch", "", "make a run's outbound connections for its guard (lockstep run --fetch providers) to `HOST:PORT,...` (as --allow-net); the default makes none (docs/egress.md)")
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
	case *hubAddr == "" && *advertise != "":
		return errorf(stderr, exitUsage, "provider: --advertise goes with --hub")
	case *hubAddr == "" && len(*trust) == 0 && !*anyone:
		return errorf(stderr, exitUsage, "provider: whose jobs? give --trust ID for each requestor's key (lockstep id --key FILE prints it), --hub, or --trust-anyone")
	}
	fetchPolicy, err := serve.ParsePolicy(*allowFetch)
	if err != nil {
		return errorf(stderr, exitUsage, "provider: %v", strings.Replace(err.Error(), "--allow-net", "--allow-fetch", 1))
	}
	key, err := loadPrivateKey(*keyFile, true)
	if err != nil {
		return errorf(stderr, exitUsage, "provider: %v", err)
	}
	var trusted []ed25519.PublicKey
	for _, t := range *trust {
		k, err := hub.ParseID(t)
		if err != nil {
			return errorf(stderr, exitUsage, "provider: --trust: %v", err)
		}
		trusted = append(trusted, k)
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
		hubKey, err := forHub(ctx, p, jobs, key, *hubAddr, *advertise, stderr)
		if err != nil {
			return errorf(stderr, exitUsage, "provider: %v", err)
		}
		trusted = append(trusted, hubKey)
		*logdAddr = "the hub"
	} else {
		p.Logd = logd.NewClient(*logdAddr)
	}
	cfg, err := hub.ServerTLS(key, nil)
	if err != nil {
		return errorf(stderr, exitRuntime, "provider: %v", err)
	}
	cfg.NextProtos = []string{"http/1.1"}
	if err := batchScheduling(); err != nil {
		fmt.Fprintf(stderr, "provider: warning: %v (replicas are fed, slower)\n", err)
	}
	srv := &http.Server{Handler: replicate.Handler(jobs, trustOnly(trusted, *anyone), fetchOnly(fetchPolicy))}
	go func() { <-ctx.Done(); srv.Close() }()
	id := hub.ID(key.Public().(ed25519.PublicKey))
	fmt.Fprintf(stderr, "lockstep provider %s: serving on %s@%s, logd %s, containerd %s\n", *name, id, ln.Addr(), *logdAddr, *address)
	if *anyone {
		fmt.Fprintf(stderr, "lockstep provider %s: --trust-anyone: any key that reaches %s can run containers here\n", *name, ln.Addr())
	}
	if err := srv.Serve(tls.NewListener(ln, cfg)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return errorf(stderr, exitRuntime, "provider: %v", err)
	}
	return 0
}

// fetchOnly lets a fetch for a guard through if policy allows its
// address.
func fetchOnly(policy *serve.Policy) func(string) error {
	if policy.Empty() {
		return nil
	}
	return func(to string) error {
		if !policy.Allows(to) {
			return fmt.Errorf("this provider's --allow-fetch does not allow %s", to)
		}
		return nil
	}
}

// trustOnly lets a job through if its client's key is one of keys (or
// any, with anyone).
func trustOnly(keys []ed25519.PublicKey, anyone bool) func(*http.Request) error {
	return func(r *http.Request) error {
		peer := hub.Peer(r)
		if anyone {
			return nil
		}
		for _, k := range keys {
			if k.Equal(peer) {
				return nil
			}
		}
		return fmt.Errorf("this provider takes jobs only from the keys it trusts (lockstep provider --trust ID), and %s is not one", hub.ID(peer))
	}
}

// forHub makes the provider the hub's: the logs come from the hub, and
// the provider announces itself now and every announceEvery. It returns
// the hub's key (a key the provider takes jobs from).
func forHub(ctx context.Context, p *replicate.Local, jobs *counting, key ed25519.PrivateKey, hubAddr, advertise string, stderr io.Writer) (ed25519.PublicKey, error) {
	hubKey, _, err := hub.ParseAddr(hubAddr)
	if err != nil {
		return nil, fmt.Errorf("--hub: %w", err)
	}
	c, err := hub.Dial(hubAddr, key)
	if err != nil {
		return nil, err
	}
	p.Logd = c.Logd()
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
	fmt.Fprintf(stderr, "lockstep provider %s: working for hub %s\n", p.ProviderName, hubAddr)
	return hubKey, nil
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
