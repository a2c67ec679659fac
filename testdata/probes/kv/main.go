// kv is a JSON key-value store over HTTP that persists to a file: the Go
// net/http service of lockstep serve's tests and benchmark.
//
//	PUT /k/NAME   stores the body under NAME (appended to the file, synced)
//	GET /k/NAME   {"key":..., "value":..., "version":N}
//	GET /         every key, and the time and a random number the service saw
//
// The random numbers come from a source seeded once from crypto/rand (the
// getrandom system call): Go's global math/rand functions read a state per
// OS thread (runtime.rand since Go 1.22), so what they return depends on
// which thread runs the handler, which the host's scheduler chooses.
package main

import (
	"bufio"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

type entry struct {
	Key     string `json:"key"`
	Value   string `json:"value"`
	Version int    `json:"version"`
}

type store struct {
	mu   sync.Mutex
	data map[string]entry
	file *os.File
	rnd  *rand.Rand
}

func open(path string) (*store, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	var seed [8]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, err
	}
	s := &store{data: map[string]entry{}, file: f, rnd: rand.New(rand.NewSource(int64(binary.LittleEndian.Uint64(seed[:]))))}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e entry
		if json.Unmarshal(sc.Bytes(), &e) == nil {
			s.data[e.Key] = e
		}
	}
	return s, sc.Err()
}

func (s *store) put(k, v string) (entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := entry{Key: k, Value: v, Version: s.data[k].Version + 1}
	b, _ := json.Marshal(e)
	if _, err := s.file.Write(append(b, '\n')); err != nil {
		return e, err
	}
	if err := s.file.Sync(); err != nil {
		return e, err
	}
	s.data[k] = e
	return e, nil
}

func main() {
	addr := flag.String("listen", "127.0.0.1:8080", "address")
	path := flag.String("file", "/kv.jsonl", "the store's file")
	flag.Parse()
	s, err := open(*path)
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/k/", func(w http.ResponseWriter, r *http.Request) {
		k := strings.TrimPrefix(r.URL.Path, "/k/")
		switch r.Method {
		case http.MethodPut, http.MethodPost:
			b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			e, err := s.put(k, string(b))
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			json.NewEncoder(w).Encode(e)
		default:
			s.mu.Lock()
			e, ok := s.data[k]
			s.mu.Unlock()
			if !ok {
				http.Error(w, "no such key", http.StatusNotFound)
				return
			}
			json.NewEncoder(w).Encode(e)
		}
	})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		keys := make([]string, 0, len(s.data))
		for k := range s.data {
			keys = append(keys, k)
		}
		n := s.rnd.Int63()
		s.mu.Unlock()
		sort.Strings(keys)
		fmt.Fprintf(w, "keys %s\ntime %s\nrandom %d\n", strings.Join(keys, ","), time.Now().UTC().Format(time.RFC3339Nano), n)
	})
	log.Printf("kv: listening on %s, store %s", *addr, *path)
	log.Fatal(http.ListenAndServe(*addr, nil))
}
