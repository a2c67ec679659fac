package logd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

// RunDaemon is lockstep-logd's main: the API over an embedded etcd member
// (default) or an etcd cluster the user runs (--etcd).
func RunDaemon(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("lockstep-logd", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:7480", "serve the HTTP/JSON API on `ADDR`")
	dir := fs.String("data-dir", "/var/lib/lockstep-logd", "embedded etcd's data `DIR`")
	name := fs.String("name", "logd", "this member's `NAME` in the etcd cluster")
	clientURL := fs.String("client-url", "http://127.0.0.1:2379", "embedded etcd's client `URL`")
	peerURL := fs.String("peer-url", "http://127.0.0.1:2380", "embedded etcd's peer `URL`")
	cluster := fs.String("initial-cluster", "", "members of a new cluster, `NAME=PEERURL,...` (default: this member alone)")
	join := fs.Bool("join", false, "join an existing cluster (after `etcdctl member add`)")
	external := fs.String("etcd", "", "use the etcd cluster at `ENDPOINTS` (comma-separated) instead of an embedded member")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: lockstep-logd [FLAGS]\n\nServes Lockstep's replicated input log (docs/logd.md).\n\nFlags:\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(err error) int { fmt.Fprintf(stderr, "lockstep-logd: %v\n", err); return 1 }
	cl, closeEtcd, err := OpenEtcd(*external, Member{Name: *name, Dir: *dir, Client: *clientURL, Peer: *peerURL, Cluster: *cluster, Join: *join})
	if err != nil {
		return fail(err)
	}
	defer closeEtcd()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fail(err)
	}
	srv := &http.Server{Handler: NewServer(NewStore(cl)), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "lockstep-logd: serving on http://%s\n", ln.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fail(err)
	}
	return 0
}
