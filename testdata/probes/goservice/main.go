// goservice is a Go HTTP service and its clients in one program: the
// clients send -n requests over loopback keep-alive connections, and with
// -print the program prints each request's latency and the times the
// service saw, by its own clocks. Lockstep's time tests and benchmark
// (hack/bench-time.sh) run it.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

func main() {
	n := flag.Int("n", 2000, "requests")
	clients := flag.Int("clients", 1, "client goroutines, each with its own connection")
	sleep := flag.Duration("sleep", 0, "how long the handler sleeps")
	print := flag.Bool("print", false, "print each request's latency and the service's times")
	flag.Parse()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	start := time.Now()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in := time.Now()
		if *sleep > 0 {
			time.Sleep(*sleep)
		}
		fmt.Fprintf(w, "%s %s %s", r.URL.Path, in.UTC().Format(time.RFC3339Nano), time.Since(in))
	})}
	go srv.Serve(ln)

	lines := make([][]string, *clients)
	var wg sync.WaitGroup
	for c := range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			for i := c; i < *n; i += *clients {
				t0 := time.Now()
				resp, err := client.Get("http://" + ln.Addr().String() + "/" + strconv.Itoa(i))
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if *print {
					lines[c] = append(lines[c], fmt.Sprintf("%s latency=%s date=%s", body, time.Since(t0), resp.Header.Get("Date")))
				}
			}
		}()
	}
	wg.Wait()
	for _, ls := range lines {
		for _, l := range ls {
			fmt.Println(l)
		}
	}
	fmt.Printf("%d requests in %s\n", *n, time.Since(start))
}
