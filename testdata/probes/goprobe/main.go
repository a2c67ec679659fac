// Command goprobe prints the nondeterminism sources a Go program reaches,
// one per line, as "name value".
package main

import (
	"crypto/rand"
	"fmt"
	mrand "math/rand"
	rand2 "math/rand/v2"
	"os"
	"runtime"
	"sort"
	"time"
)

func main() {
	now := time.Now()
	fmt.Println("time_now", now.UTC().Format(time.RFC3339Nano), now.UnixNano())
	b := make([]byte, 16)
	rand.Read(b)
	fmt.Printf("crypto_rand %x\n", b)
	fmt.Println("math_rand", mrand.Int63(), rand2.Uint64())
	m := map[string]int{}
	for i := 0; i < 32; i++ {
		m[fmt.Sprint("k", i)] = i
	}
	var order []string
	for k := range m {
		order = append(order, k)
	}
	fmt.Println("map_order", order)
	ch1, ch2 := make(chan int, 1), make(chan int, 1)
	var picks []int
	for i := 0; i < 16; i++ {
		ch1 <- 1
		ch2 <- 2
		select {
		case v := <-ch1:
			picks = append(picks, v)
			<-ch2
		case v := <-ch2:
			picks = append(picks, v)
			<-ch1
		}
	}
	fmt.Println("select_picks", picks)
	h, _ := os.Hostname()
	fmt.Println("hostname", h, "numcpu", runtime.NumCPU(), "gomaxprocs", runtime.GOMAXPROCS(0))
	fmt.Println("pid", os.Getpid(), "ppid", os.Getppid())
	var x int
	fmt.Printf("aslr heap=%p\n", &x)
	dir := "/tmp/lockstep-goprobe-dir"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	os.MkdirAll(dir, 0o755)
	for i := 0; i < 30; i++ {
		os.WriteFile(fmt.Sprintf("%s/g%02d", dir, (i*7)%30), []byte("x"), 0o644)
	}
	f, _ := os.Open(dir)
	names, _ := f.Readdirnames(-1)
	fmt.Println("readdir", names, "sorted", sort.StringsAreSorted(names))
	st, _ := os.Stat(dir + "/g03")
	fmt.Println("stat_mtime", st.ModTime().UTC().Format(time.RFC3339Nano))
	if cpu, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		fmt.Println("cpuinfo_bytes", len(cpu))
	}
	// Last: after a goroutine blocks, it may resume on another runtime
	// thread, whose random state differs (docs/determinism.md, threads).
	start := time.Now()
	time.Sleep(100 * time.Millisecond)
	fmt.Println("sleep_ended", time.Since(start) >= 100*time.Millisecond, time.Now().UTC().Format(time.RFC3339Nano))
}
