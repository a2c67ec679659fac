package cli

import (
	"context"
	"errors"
	"fmt"
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

Serves replicas to lockstep run --provider: for each job it follows the
job's stream in the logd at --logd (verifying every checkpoint against the
stream's key), runs the container on this host's containerd with the
Lockstep runtime, streams its output back with back-pressure, and reports
the signed digest of that output to logd with this provider's key (--key,
made if missing). The protocol is in docs/run.md.

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
	fs.Usage = func() { io.WriteString(stderr, providerUsage); fs.PrintDefaults() }
	if code := parseFlags(fs, args, stderr); code >= 0 {
		return code
	}
	switch {
	case fs.NArg() > 0:
		return errorf(stderr, exitUsage, "provider: takes no arguments, got %q (lockstep provider --help lists the flags)", fs.Args())
	case *logdAddr == "":
		return errorf(stderr, exitUsage, "provider: --logd ADDR is required: the logd the jobs' streams are read from")
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
	p := &replicate.Local{ProviderName: *name, Containerd: *address, Namespace: *ns, Logd: logd.NewClient(*logdAddr), Key: key, Annotations: ann}
	defer p.Close()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return errorf(stderr, exitRuntime, "provider: %v", err)
	}
	if err := batchScheduling(); err != nil {
		fmt.Fprintf(stderr, "provider: warning: %v (replicas are fed, slower)\n", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Handler: replicate.Handler(p, token)}
	go func() { <-ctx.Done(); srv.Close() }()
	fmt.Fprintf(stderr, "lockstep provider %s: serving on %s, logd %s, containerd %s\n", *name, ln.Addr(), *logdAddr, *address)
	if token == "" {
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
