package logd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// The HTTP/JSON API (docs/logd.md). HTTP/JSON, not gRPC, because every
// client (curl, a shim, a browser) speaks it and the payloads are small
// batches; etcd itself is reached over its own gRPC.

// StreamInfo is GET /v1/streams/{stream}.
type StreamInfo struct {
	Stream     string     `json:"stream"`
	Key        string     `json:"key"`
	Checkpoint Checkpoint `json:"checkpoint"`
}

// AppendRequest is POST /v1/streams/{stream}/entries.
type AppendRequest struct {
	Expect     int64      `json:"expect"`  // the stream's size the writer saw: a stale writer is refused
	Records    [][]byte   `json:"records"` // encoded entries
	Checkpoint Checkpoint `json:"checkpoint"`
}

// Server serves a Store over HTTP.
type Server struct {
	Store *Store
	mux   *http.ServeMux
}

// NewServer returns the API handler.
func NewServer(st *Store) *Server {
	s := &Server{Store: st, mux: http.NewServeMux()}
	s.mux.HandleFunc("POST /v1/streams", s.create)
	s.mux.HandleFunc("GET /v1/streams/{stream}", s.info)
	s.mux.HandleFunc("POST /v1/streams/{stream}/entries", s.append)
	s.mux.HandleFunc("GET /v1/streams/{stream}/entries", s.entries)
	s.mux.HandleFunc("GET /v1/streams/{stream}/checkpoints", s.checkpoints)
	s.mux.HandleFunc("GET /v1/streams/{stream}/proof/inclusion", s.inclusion)
	s.mux.HandleFunc("GET /v1/streams/{stream}/proof/consistency", s.consistency)
	s.mux.HandleFunc("POST /v1/streams/{stream}/digests", s.report)
	s.mux.HandleFunc("GET /v1/streams/{stream}/verdict", s.verdict)
	s.mux.HandleFunc("POST /v1/streams/{stream}/traces", s.trace)
	s.mux.HandleFunc("GET /v1/streams/{stream}/traces/{replica}", s.getTrace)
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func reply(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code := http.StatusBadRequest
		switch {
		case isEtcdUnavailable(err):
			code = http.StatusServiceUnavailable
		case errors.Is(err, ErrNoStream), errors.Is(err, ErrNoTrace):
			code = http.StatusNotFound
		case errors.Is(err, ErrStale), errors.Is(err, ErrExists):
			code = http.StatusConflict
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
			code = http.StatusServiceUnavailable
		}
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}

func decodeBody(r *http.Request, v any) error {
	d := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 64<<20))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var req struct{ Stream, Key string }
	if err := decodeBody(r, &req); err != nil {
		reply(w, nil, err)
		return
	}
	key, err := DecodeKey(req.Key)
	if err == nil {
		err = s.Store.Create(r.Context(), req.Stream, key)
	}
	reply(w, map[string]string{"stream": req.Stream}, err)
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	key, err := s.Store.Key(r.Context(), stream)
	if err != nil {
		reply(w, nil, err)
		return
	}
	cp, _, err := s.Store.Head(r.Context(), stream)
	reply(w, StreamInfo{Stream: stream, Key: EncodeKey(key), Checkpoint: cp}, err)
}

func (s *Server) append(w http.ResponseWriter, r *http.Request) {
	var req AppendRequest
	var err error
	if r.Header.Get("Content-Type") == RecordsType {
		err = decodeFramedAppend(r, &req)
	} else {
		err = decodeBody(r, &req)
	}
	if err != nil {
		reply(w, nil, err)
		return
	}
	cp, err := s.Store.Append(r.Context(), r.PathValue("stream"), req.Expect, req.Records, req.Checkpoint)
	reply(w, map[string]Checkpoint{"checkpoint": cp}, err)
}

func queryInt(r *http.Request, name string, def int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	return strconv.ParseInt(v, 10, 64)
}

// entries returns records from ?from= (at most ?limit=, default 1024);
// with ?wait=SECONDS it waits that long for one to exist (a subscription
// is a loop of these).
func (s *Server) entries(w http.ResponseWriter, r *http.Request) {
	stream := r.PathValue("stream")
	from, err1 := queryInt(r, "from", 0)
	limit, err2 := queryInt(r, "limit", 1024)
	wait, err3 := queryInt(r, "wait", 0)
	if err := errors.Join(err1, err2, err3); err != nil {
		reply(w, nil, err)
		return
	}
	if wait > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), time.Duration(wait)*time.Second)
		err := s.Store.Wait(ctx, stream, from)
		cancel()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			reply(w, nil, err)
			return
		}
	}
	recs, err := s.Store.Records(r.Context(), stream, from, limit)
	if err != nil || r.Header.Get("Accept") != RecordsType {
		reply(w, map[string][][]byte{"records": recs}, err)
		return
	}
	w.Header().Set("Content-Type", RecordsType)
	bw := bufio.NewWriterSize(w, 64<<10)
	for _, rec := range recs {
		if writeFrame(bw, rec) != nil {
			return // the client went away
		}
	}
	bw.Flush()
}

// decodeFramedAppend reads an append in binary frames: the first is the
// request as JSON without its records, the rest are the records.
func decodeFramedAppend(r *http.Request, req *AppendRequest) error {
	frames, err := readFrames(http.MaxBytesReader(nil, r.Body, 64<<20), MaxBatch+1)
	if err != nil {
		return err
	}
	if len(frames) == 0 {
		return errors.New("append: an empty body")
	}
	d := json.NewDecoder(bytes.NewReader(frames[0]))
	d.DisallowUnknownFields()
	if err := d.Decode(req); err != nil {
		return fmt.Errorf("append: the request frame: %w", err)
	}
	if len(req.Records) > 0 {
		return errors.New("append: records in the request frame of a framed body")
	}
	req.Records = frames[1:]
	return nil
}

func (s *Server) inclusion(w http.ResponseWriter, r *http.Request) {
	i, err1 := queryInt(r, "index", -1)
	n, err2 := queryInt(r, "size", -1)
	if err := errors.Join(err1, err2); err != nil {
		reply(w, nil, err)
		return
	}
	p, err := s.Store.InclusionProof(r.Context(), r.PathValue("stream"), i, n)
	reply(w, map[string][]tlog.Hash{"proof": p}, err)
}

func (s *Server) consistency(w http.ResponseWriter, r *http.Request) {
	old, err1 := queryInt(r, "old", -1)
	n, err2 := queryInt(r, "size", -1)
	if err := errors.Join(err1, err2); err != nil {
		reply(w, nil, err)
		return
	}
	p, err := s.Store.ConsistencyProof(r.Context(), r.PathValue("stream"), old, n)
	reply(w, map[string][]tlog.Hash{"proof": p}, err)
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	var rep Report
	if err := decodeBody(r, &rep); err != nil {
		reply(w, nil, err)
		return
	}
	rep.Stream = r.PathValue("stream")
	reply(w, map[string]string{"replica": rep.Replica}, s.Store.Report(r.Context(), rep))
}

func (s *Server) trace(w http.ResponseWriter, r *http.Request) {
	var t Trace
	if err := decodeBody(r, &t); err != nil {
		reply(w, nil, err)
		return
	}
	t.Stream = r.PathValue("stream")
	reply(w, map[string]string{"replica": t.Replica}, s.Store.Trace(r.Context(), t))
}

func (s *Server) getTrace(w http.ResponseWriter, r *http.Request) {
	t, err := s.Store.GetTrace(r.Context(), r.PathValue("stream"), r.PathValue("replica"))
	reply(w, t, err)
}

func (s *Server) verdict(w http.ResponseWriter, r *http.Request) {
	n, err := queryInt(r, "replicas", 3)
	if err != nil {
		reply(w, nil, err)
		return
	}
	v, err := s.Store.Verdict(r.Context(), r.PathValue("stream"), int(n))
	reply(w, v, err)
}

func (s *Server) checkpoints(w http.ResponseWriter, r *http.Request) {
	cps, err := s.Store.Checkpoints(r.Context(), r.PathValue("stream"))
	reply(w, map[string][]Checkpoint{"checkpoints": cps}, err)
}

// isEtcdUnavailable reports errors of the etcd cluster (no leader, a
// timeout, a member gone): the request may be retried.
func isEtcdUnavailable(err error) bool {
	s := err.Error()
	return strings.Contains(s, "etcdserver:") || strings.Contains(s, "rpc error") || strings.Contains(s, "context deadline")
}
