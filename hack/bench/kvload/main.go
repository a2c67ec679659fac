// kvload is a keep-alive HTTP load generator for the key-value service
// (testdata/probes/kv): -clients connections, each sending -n requests in
// turn (a PUT then a GET of its own key), and it prints one line:
// requests per second, p50 and p99 latency in ms, and errors.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "the service")
	clients := flag.Int("clients", 16, "concurrent keep-alive connections")
	n := flag.Int("n", 100, "requests per client")
	flag.Parse()
	var mu sync.Mutex
	var lat []time.Duration
	errs := 0
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			var mine []time.Duration
			bad := 0
			for i := 0; i < *n; i++ {
				method, body := "GET", ""
				if i%2 == 0 {
					method, body = "PUT", fmt.Sprintf("value %d of client %d", i, c)
				}
				req, _ := http.NewRequest(method, fmt.Sprintf("%s/k/c%d", *url, c), strings.NewReader(body))
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("%s", resp.Status)
					}
				}
				mine = append(mine, time.Since(t0))
				if err != nil {
					bad++
				}
			}
			mu.Lock()
			lat = append(lat, mine...)
			errs += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	took := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	fmt.Printf("%.1f %.2f %.2f %d\n", float64(len(lat))/took.Seconds(), q(0.5), q(0.99), errs)
	if errs > 0 {
		os.Exit(1)
	}
}
