package hub

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/replicate"
)

// Client is a party's connection to the hub: requestor, owner or
// provider, known to the hub by Key.
type Client struct {
	Addr string // HOST:PORT
	HTTP *http.Client
	// Sent and Received count the bytes on the client's link to the hub
	// (TLS records included).
	Sent, Received atomic.Int64
}

// Dial is a client of the hub at pinned (ID@HOST:PORT) with key.
func Dial(pinned string, key ed25519.PrivateKey) (*Client, error) {
	hubKey, addr, err := ParseAddr(pinned)
	if err != nil {
		return nil, fmt.Errorf("--hub: %w", err)
	}
	hc, err := HTTPClient(key, hubKey)
	if err != nil {
		return nil, err
	}
	c := &Client{Addr: addr, HTTP: hc}
	hc.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, a string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, a)
		if err != nil {
			return nil, err
		}
		return &counted{Conn: conn, c: c}, nil
	}
	return c, nil
}

type counted struct {
	net.Conn
	c *Client
}

func (c *counted) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.Received.Add(int64(n))
	return n, err
}

func (c *counted) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.c.Sent.Add(int64(n))
	return n, err
}

// Logd is a client of the logs the hub serves (read-only to all but the
// providers' reports).
func (c *Client) Logd() *logd.Client {
	return &logd.Client{Base: "https://" + c.Addr, HTTP: c.HTTP}
}

// do sends a request; an answer other than 2xx is an error with the
// hub's text.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+c.Addr+path, body)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("hub %s: %w", c.Addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return answer(resp)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// answer is the error of a hub's answer other than 2xx: its text.
func answer(resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return &Error{Status: resp.StatusCode, Msg: strings.TrimSpace(string(msg))}
}

// Error is the hub's refusal.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return "hub: " + e.Msg }

// Register registers s (signed by its owner: Sign).
func (c *Client) Register(ctx context.Context, s Service) error {
	return c.do(ctx, "POST", "/v1/services", s, nil)
}

// Services lists the registered services.
func (c *Client) Services(ctx context.Context) ([]Service, error) {
	var s []Service
	return s, c.do(ctx, "GET", "/v1/services", nil, &s)
}

// Service is the service called name.
func (c *Client) Service(ctx context.Context, name string) (Service, error) {
	var s Service
	return s, c.do(ctx, "GET", "/v1/services/"+name, nil, &s)
}

// Providers lists the providers that announced themselves.
func (c *Client) Providers(ctx context.Context) ([]Provider, error) {
	var p []Provider
	return p, c.do(ctx, "GET", "/v1/providers", nil, &p)
}

// Announce tells the hub this provider (the client's key) serves jobs.
func (c *Client) Announce(ctx context.Context, p Provider) error {
	return c.do(ctx, "POST", "/v1/providers", p, nil)
}

// Run runs the service called name with req, sending stdin as its input;
// verified output goes to stdout as it is agreed, the guard's messages
// to msg.
func (c *Client) Run(ctx context.Context, name string, req RunRequest, stdin io.Reader, stdout io.Writer, msg func(string)) (RunResult, error) {
	return c.run(ctx, "/v1/runs/", name, req, stdin, stdout, msg, nil)
}

// Serve runs the network service called name: serving gets the address
// at the hub where its clients connect, and the service stops (at the
// log's stop entry) when stop ends, as stdin ends a run.
func (c *Client) Serve(ctx context.Context, name string, req RunRequest, stop io.Reader, stdout io.Writer, msg, serving func(string)) (RunResult, error) {
	return c.run(ctx, "/v1/serve/", name, req, stop, stdout, msg, serving)
}

func (c *Client) run(ctx context.Context, path, name string, req RunRequest, stdin io.Reader, stdout io.Writer, msg, serving func(string)) (RunResult, error) {
	head, _ := json.Marshal(req)
	body := io.MultiReader(bytes.NewReader(binary.BigEndian.AppendUint32(nil, uint32(len(head)))), bytes.NewReader(head), stdin)
	hr, err := http.NewRequestWithContext(ctx, "POST", "https://"+c.Addr+path+name, body)
	if err != nil {
		return RunResult{}, err
	}
	resp, err := c.HTTP.Do(hr)
	if err != nil {
		return RunResult{}, fmt.Errorf("hub %s: %w", c.Addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return RunResult{}, answer(resp)
	}
	fr := replicate.NewFrameReader(resp.Body)
	for {
		kind, p, err := fr.Next()
		if err != nil {
			if ctx.Err() != nil {
				return RunResult{}, ctx.Err()
			}
			return RunResult{}, fmt.Errorf("hub %s: the run's answer broke off: %w", c.Addr, err)
		}
		switch kind {
		case frameOutput:
			if _, err := stdout.Write(p); err != nil {
				return RunResult{}, &StdoutError{err}
			}
		case frameMessage:
			if msg != nil {
				msg(string(p))
			}
		case frameServing:
			if serving != nil {
				serving(string(p))
			}
		case frameResult:
			var res RunResult
			return res, json.Unmarshal(p, &res)
		default:
			return RunResult{}, fmt.Errorf("hub %s: unknown frame %q", c.Addr, kind)
		}
	}
}

// StdoutError is Run's error when the output could not be written.
type StdoutError struct{ Err error }

func (e *StdoutError) Error() string { return "stdout: " + e.Err.Error() }
func (e *StdoutError) Unwrap() error { return e.Err }

// IsUnknown says whether err is the hub's "no such service".
func IsUnknown(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}
