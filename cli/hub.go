package cli

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/lockstep-run/lockstep/hub"
	"github.com/lockstep-run/lockstep/logd"
	"github.com/spf13/pflag"
)

const hubUsage = `Usage: lockstep hub --key FILE [FLAGS]

The hub: services are registered here by name (lockstep register) and
providers announce themselves here (lockstep provider --hub); lockstep run,
pipe and parallel with --hub ask it for a named service, and it is the
guard of that run: it places the replicas on distinct providers, appends
the requestor's input to the run's log, votes on the replicas' output and
sends the requestor the verified output once. Its state (services,
providers, runs) and the logs are kept in etcd: a restarted hub loses
none. Every connection is TLS with both parties' ed25519 keys; the hub's
address for the others is ID@HOST:PORT, printed at start. --status serves a
page of providers, services and runs. See docs/hub.md.

Flags:
`

func hubMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("hub", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:7400", "serve the hub (TLS, both parties' keys) on `ADDR`")
	status := fs.String("status", "127.0.0.1:7401", "serve the status page (plain HTTP, read only) on `ADDR`; \"\" for none")
	keyFile := fs.String("key", "", "the hub's private key `FILE` (made if missing; required)")
	dir := fs.String("data-dir", "/var/lib/lockstep-hub", "the embedded etcd's data `DIR`")
	external := fs.String("etcd", "", "keep the state in the etcd cluster at `ENDPOINTS` (comma-separated) instead of an embedded member")
	tick := fs.Duration("tick", 10*time.Millisecond, "the log clock's resolution for the runs it guards")
	serveHost := fs.String("serve-host", "", "listen for the clients of network services (lockstep serve NAME) on `HOST`, a port each (default: --listen's host)")
	fs.Usage = func() { io.WriteString(stderr, hubUsage); fs.PrintDefaults() }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return errorf(stderr, exitUsage, "hub: takes no arguments, got %q (lockstep hub --help lists the flags)", fs.Args())
	}
	key, err := loadPrivateKey(*keyFile, true)
	if err != nil {
		return errorf(stderr, exitUsage, "hub: %v", err)
	}
	cl, closeEtcd, err := logd.OpenEtcd(*external, logd.Member{Name: "hub", Dir: *dir, Quiet: true})
	if err != nil {
		return errorf(stderr, exitRuntime, "hub: %v", err)
	}
	defer closeEtcd()
	api := logd.NewServer(logd.NewStore(cl))
	// The guard's own client of the logs: in this process, over loopback.
	own, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return errorf(stderr, exitRuntime, "hub: %v", err)
	}
	go http.Serve(own, api)
	h := hub.New(key, cl, logd.NewClient(own.Addr().String()), api)
	if err := h.Recover(context.Background()); err != nil {
		return errorf(stderr, exitRuntime, "hub: %v", err)
	}
	h.Tick = *tick
	h.ServeHost = *serveHost
	if h.ServeHost == "" {
		h.ServeHost, _, _ = net.SplitHostPort(*listen)
	}
	h.Log = func(s string) { fmt.Fprintf(stderr, "lockstep hub: %s\n", s) }
	cfg, err := hub.ServerTLS(key, nil)
	if err != nil {
		return errorf(stderr, exitRuntime, "hub: %v", err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return errorf(stderr, exitRuntime, "hub: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Handler: h.Handler(), TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second}
	srv.TLSConfig.NextProtos = []string{"http/1.1"}
	servers := []*http.Server{srv}
	if *status != "" {
		sln, err := net.Listen("tcp", *status)
		if err != nil {
			return errorf(stderr, exitRuntime, "hub: --status: %v", err)
		}
		ss := &http.Server{Handler: h.Status(), ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, ss)
		go ss.Serve(sln)
		fmt.Fprintf(stderr, "lockstep hub: status page on http://%s/\n", sln.Addr())
	}
	go func() {
		<-ctx.Done()
		for _, s := range servers {
			s.Close()
		}
	}()
	fmt.Fprintf(stderr, "lockstep hub: serving on %s@%s\n", h.ID(), ln.Addr())
	fmt.Fprintf(stdout, "%s@%s\n", h.ID(), ln.Addr())
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return errorf(stderr, exitRuntime, "hub: %v", err)
	}
	return 0
}

// hubFlags are a party's flags for the hub: where it is and who this is.
type hubFlags struct{ addr, key *string }

func addHubFlags(fs *pflag.FlagSet) hubFlags {
	return hubFlags{
		addr: fs.String("hub", os.Getenv("LOCKSTEP_HUB"), "the hub at `ID@HOST:PORT` (lockstep hub prints it; default $LOCKSTEP_HUB)"),
		key:  fs.String("key", os.Getenv("LOCKSTEP_KEY"), "this party's private key `FILE`, made if missing (default $LOCKSTEP_KEY, else ~/.config/lockstep/key)"),
	}
}

// dial connects to the hub as this party.
func (f hubFlags) dial() (*hub.Client, ed25519.PrivateKey, error) {
	if *f.addr == "" {
		return nil, nil, errors.New("no hub: give --hub ID@HOST:PORT or set LOCKSTEP_HUB")
	}
	key, err := f.loadKey()
	if err != nil {
		return nil, nil, err
	}
	c, err := hub.Dial(*f.addr, key)
	return c, key, err
}

// loadKey is this party's key (--key, $LOCKSTEP_KEY or
// ~/.config/lockstep/key), made if missing.
func (f hubFlags) loadKey() (ed25519.PrivateKey, error) {
	path := *f.key
	if path == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("no --key and no home directory: %w", err)
		}
		path = filepath.Join(home, ".config", "lockstep", "key")
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
	}
	return loadPrivateKey(path, true)
}

const servicesUsage = `Usage: lockstep services [--hub ID@HOST:PORT] [--json]

Lists the services registered at the hub.

Flags:
`

func servicesMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("services", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	hf := addHubFlags(fs)
	asJSON := fs.Bool("json", false, "print them as JSON")
	fs.Usage = func() { io.WriteString(stderr, servicesUsage); fs.PrintDefaults() }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	c, _, err := hf.dial()
	if err != nil {
		return errorf(stderr, exitUsage, "services: %v", err)
	}
	ss, err := c.Services(context.Background())
	if err != nil {
		return errorf(stderr, exitRuntime, "services: %v", err)
	}
	if *asJSON {
		printJSON(stdout, ss)
		return 0
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tREPLICAS\tIMAGE\tDIGEST\tCOMMAND\tEGRESS\tOWNER")
	for _, s := range ss {
		cmd := strings.Join(s.Args, " ")
		if cmd == "" {
			cmd = "(the image's)"
		}
		egress := s.AllowNet
		if egress == "" {
			egress = "none"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.19s…\t%s\t%s\t%.8s…\n", s.Name, s.Replicas, s.Image, s.Digest, cmd, egress, s.Owner)
	}
	tw.Flush()
	return 0
}

const idUsage = `Usage: lockstep id [--key FILE]

Prints this party's ID: its ed25519 public key, as a provider's --trust
and the address ID@HOST:PORT name it. The key is --key's ($LOCKSTEP_KEY,
else ~/.config/lockstep/key), made if missing.

Flags:
`

func idMain(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("id", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	hf := hubFlags{addr: new(string), key: fs.String("key", os.Getenv("LOCKSTEP_KEY"), "the private key `FILE` (made if missing; default $LOCKSTEP_KEY, else ~/.config/lockstep/key)")}
	fs.Usage = func() { io.WriteString(stderr, idUsage); fs.PrintDefaults() }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	key, err := hf.loadKey()
	if err != nil {
		return errorf(stderr, exitUsage, "id: %v", err)
	}
	fmt.Fprintln(stdout, hub.ID(key.Public().(ed25519.PublicKey)))
	return 0
}
