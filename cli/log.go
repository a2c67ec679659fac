package cli

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/lockstep-run/lockstep/logd"
	"github.com/lockstep-run/lockstep/logd/wire"
	"github.com/spf13/pflag"
)

const logUsage = `Usage: lockstep log SUBCOMMAND [FLAGS]

The replicated input log (docs/log-format.md, docs/logd.md).

Subcommands:
  create STREAM    create a stream; its checkpoints are signed with --key (made if missing)
  append STREAM    append stdin as input entries (<= 1 MiB each) and a signed checkpoint
  cat STREAM       print the verified input of a stream (--follow to keep reading)
  verify FILE      verify a log file: entries, order, checkpoints, signatures
  export STREAM    write a stream in the portable file form to stdout
  import FILE      create a stream from a log file (verified first)
  status STREAM    the stream's size, checkpoint and replicas' verdict

Run 'lockstep log SUBCOMMAND --help' for its flags.
`

func logMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		io.WriteString(stderr, logUsage)
		if len(args) == 0 {
			return exitUsage
		}
		return 0
	}
	sub := map[string]func([]string, io.Writer, io.Writer) int{
		"create": logCreate, "append": logAppend, "cat": logCat, "verify": logVerify,
		"export": logExport, "import": logImport, "status": logStatus,
	}[args[0]]
	if sub == nil {
		return errorf(stderr, exitUsage, "log: unknown subcommand %q (see lockstep log --help)", args[0])
	}
	return sub(args[1:], stdout, stderr)
}

// logFlags are the flags every subcommand shares.
type logFlags struct {
	fs      *pflag.FlagSet
	name    string
	usage   string
	addr    *string
	keyFile *string
	json    *bool
}

func newLogFlags(name, usage string, stderr io.Writer) *logFlags {
	fs := pflag.NewFlagSet("lockstep log "+name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	f := &logFlags{fs: fs, name: name, usage: usage,
		addr:    fs.String("logd", envOr("LOCKSTEP_LOGD", "127.0.0.1:7480"), "the logd at `ADDR` ($LOCKSTEP_LOGD)"),
		keyFile: fs.String("key", "", "ed25519 key `FILE` (private: create, append; public or private: cat, verify)"),
		json:    fs.Bool("json", false, "print JSON for programs"),
	}
	fs.Usage = func() { fmt.Fprintf(stderr, "Usage: lockstep log %s\n\nFlags:\n%s", usage, fs.FlagUsages()) }
	return f
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// parse parses args and wants n positional arguments.
func (f *logFlags) parse(args []string, n int, stderr io.Writer) ([]string, int, bool) {
	if code := parseFlags(f.fs, args, stderr); code >= 0 {
		return nil, code, false
	}
	if got := f.fs.NArg(); got != n {
		return nil, errorf(stderr, exitUsage, "log %s: want %d argument(s), got %d (lockstep log %s; --help lists the flags)", f.name, n, got, f.usage), false
	}
	return f.fs.Args(), 0, true
}

// Key files hold one line: "private BASE64-SEED" or "public BASE64-KEY".
func loadPrivateKey(path string, create bool) (ed25519.PrivateKey, error) {
	if path == "" {
		return nil, errors.New("--key FILE is required (the appender's private key)")
	}
	k, err := wire.ReadPrivateKey(path)
	if errors.Is(err, os.ErrNotExist) && create {
		if _, k, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return nil, err
		}
		if err = wire.WritePrivateKey(path, k); errors.Is(err, os.ErrExist) {
			return wire.ReadPrivateKey(path) // made meanwhile by another process
		}
		return k, err
	}
	return k, err
}

func loadPublicKey(path string) (ed25519.PublicKey, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kind, v, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
	switch kind {
	case "public":
		return logd.DecodeKey(v)
	case "private":
		k, err := loadPrivateKey(path, false)
		if err != nil {
			return nil, err
		}
		return k.Public().(ed25519.PublicKey), nil
	}
	return nil, fmt.Errorf("%s: not a key file (want \"public BASE64\" or \"private BASE64\")", path)
}

func printJSON(w io.Writer, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintf(w, "%s\n", b)
}

func logCreate(args []string, stdout, stderr io.Writer) int {
	f := newLogFlags("create", "create --key FILE [--logd ADDR] STREAM", stderr)
	pos, code, ok := f.parse(args, 1, stderr)
	if !ok {
		return code
	}
	k, err := loadPrivateKey(*f.keyFile, true)
	if err != nil {
		return errorf(stderr, 1, "log create: %v", err)
	}
	pub := k.Public().(ed25519.PublicKey)
	if err := logd.NewClient(*f.addr).Create(context.Background(), pos[0], pub); err != nil {
		return errorf(stderr, 1, "log create: %v", err)
	}
	if *f.json {
		printJSON(stdout, map[string]string{"stream": pos[0], "key": logd.EncodeKey(pub)})
	} else {
		fmt.Fprintf(stdout, "created %s; checkpoints are signed by public %s\n", pos[0], logd.EncodeKey(pub))
	}
	return 0
}

func logAppend(args []string, stdout, stderr io.Writer) int {
	f := newLogFlags("append", "append --key FILE [--logd ADDR] STREAM < INPUT", stderr)
	chunk := f.fs.Int("chunk", logd.MaxPayload, "split the input into entries of at most `BYTES`")
	batch := f.fs.Int("batch", 64, "entries per durable append")
	end := f.fs.Bool("end", false, "append an end-of-stream entry after the input")
	pos, code, ok := f.parse(args, 1, stderr)
	if !ok {
		return code
	}
	if *chunk < 1 || *chunk > logd.MaxPayload || *batch < 1 {
		return errorf(stderr, exitUsage, "log append: --chunk must be 1..%d and --batch at least 1", logd.MaxPayload)
	}
	k, err := loadPrivateKey(*f.keyFile, false)
	if err != nil {
		return errorf(stderr, 1, "log append: %v", err)
	}
	ctx := context.Background()
	a, err := logd.NewClient(*f.addr).OpenAppender(ctx, pos[0], k)
	if err != nil {
		return errorf(stderr, 1, "log append: %v", err)
	}
	r := bufio.NewReaderSize(os.Stdin, *chunk)
	var pending []logd.Entry
	var pendingBytes int
	var cp logd.Checkpoint
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		c, err := a.Append(ctx, pending)
		pending, pendingBytes, cp = nil, 0, c
		return err
	}
	for {
		buf := make([]byte, *chunk)
		n, err := io.ReadFull(r, buf)
		// One append is one etcd request: keep it under etcd's default
		// 1.5 MiB request limit.
		if n > 0 && pendingBytes+n > logd.MaxPayload {
			if err := flush(); err != nil {
				return errorf(stderr, 1, "log append: %v", err)
			}
		}
		if n > 0 {
			pending = append(pending, logd.Entry{Kind: logd.KindInput, Time: time.Now().UnixNano(), Payload: buf[:n]})
			pendingBytes += n
		}
		if len(pending) >= *batch {
			if err := flush(); err != nil {
				return errorf(stderr, 1, "log append: %v", err)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return errorf(stderr, 1, "log append: read input: %v", err)
		}
	}
	if *end {
		pending = append(pending, logd.Entry{Kind: logd.KindEnd, Time: time.Now().UnixNano()})
	}
	if err := flush(); err != nil {
		return errorf(stderr, 1, "log append: %v", err)
	}
	if *f.json {
		printJSON(stdout, cp)
	} else if cp.Size > 0 {
		fmt.Fprintf(stdout, "%s: %d entries, root %s\n", pos[0], cp.Size, cp.Root)
	}
	return 0
}

func logCat(args []string, stdout, stderr io.Writer) int {
	f := newLogFlags("cat", "cat --key PUBFILE [--logd ADDR] [--follow] STREAM", stderr)
	follow := f.fs.BoolP("follow", "f", false, "keep reading as entries are appended (until an end entry)")
	pos, code, ok := f.parse(args, 1, stderr)
	if !ok {
		return code
	}
	pub, err := loadPublicKey(*f.keyFile)
	switch {
	case err != nil:
		return errorf(stderr, exitUsage, "log cat: --key %s: %v", *f.keyFile, err)
	case pub == nil:
		return errorf(stderr, exitUsage, "log cat: --key FILE is required, so that only entries the stream's key signed come out: the key file given to lockstep log create, or a file with the line \"public KEY\" it printed")
	}
	ctx := context.Background()
	fl, err := logd.NewClient(*f.addr).Follow(ctx, pos[0], pub)
	if err != nil {
		return errorf(stderr, 1, "log cat: %v", err)
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	for {
		wait := time.Duration(0)
		if *follow {
			wait = 30 * time.Second
		}
		es, err := fl.Next(ctx, wait)
		if err != nil {
			w.Flush()
			return errorf(stderr, 1, "log cat: %v", err)
		}
		for _, e := range es {
			if *f.json {
				enc.Encode(map[string]any{"seq": e.Seq, "kind": e.Kind.String(), "time": e.Time, "payload": e.Payload})
			} else if e.Kind == logd.KindInput {
				w.Write(e.Payload)
			}
			if e.Kind == logd.KindEnd {
				return 0
			}
		}
		if len(es) == 0 && !*follow {
			return 0
		}
		w.Flush()
	}
}

func logVerify(args []string, stdout, stderr io.Writer) int {
	f := newLogFlags("verify", "verify [--key PUBFILE] FILE", stderr)
	pos, code, ok := f.parse(args, 1, stderr)
	if !ok {
		return code
	}
	pub, err := loadPublicKey(*f.keyFile)
	if err != nil {
		return errorf(stderr, exitUsage, "log verify: %v", err)
	}
	v, err := readLogFile(pos[0], pub)
	if err != nil {
		return errorf(stderr, 1, "log verify: %v", err)
	}
	var last logd.Checkpoint
	if n := len(v.Checkpoints); n > 0 {
		last = v.Checkpoints[n-1]
	}
	if *f.json {
		printJSON(stdout, map[string]any{"stream": v.Header.Stream, "entries": len(v.Entries), "checkpoints": len(v.Checkpoints), "root": last.Root.String(), "key": v.Header.Key})
	} else {
		trust := "the key it names"
		if pub != nil {
			trust = "the trusted key"
		}
		fmt.Fprintf(stdout, "%s: stream %s, %d entries, %d checkpoints signed by %s, root %s: OK\n", pos[0], v.Header.Stream, len(v.Entries), len(v.Checkpoints), trust, last.Root)
	}
	return 0
}

func logExport(args []string, stdout, stderr io.Writer) int {
	f := newLogFlags("export", "export [--logd ADDR] STREAM > FILE", stderr)
	pos, code, ok := f.parse(args, 1, stderr)
	if !ok {
		return code
	}
	if err := logd.Export(context.Background(), logd.NewClient(*f.addr), pos[0], stdout); err != nil {
		return errorf(stderr, 1, "log export: %v", err)
	}
	return 0
}

func logImport(args []string, stdout, stderr io.Writer) int {
	f := newLogFlags("import", "import [--logd ADDR] [--key PUBFILE] FILE", stderr)
	pos, code, ok := f.parse(args, 1, stderr)
	if !ok {
		return code
	}
	pub, err := loadPublicKey(*f.keyFile)
	if err != nil {
		return errorf(stderr, exitUsage, "log import: %v", err)
	}
	v, err := readLogFile(pos[0], pub)
	if err != nil {
		return errorf(stderr, 1, "log import: %v", err)
	}
	if err := logd.Import(context.Background(), logd.NewClient(*f.addr), v); err != nil {
		return errorf(stderr, 1, "log import: %v", err)
	}
	fmt.Fprintf(stdout, "imported %s: %d entries\n", v.Header.Stream, len(v.Entries))
	return 0
}

func logStatus(args []string, stdout, stderr io.Writer) int {
	f := newLogFlags("status", "status [--logd ADDR] [--replicas N] [--json] STREAM", stderr)
	replicas := f.fs.Int("replicas", 3, "replicas expected for the verdict")
	pos, code, ok := f.parse(args, 1, stderr)
	if !ok {
		return code
	}
	ctx := context.Background()
	c := logd.NewClient(*f.addr)
	info, err := c.Info(ctx, pos[0])
	if err != nil {
		return errorf(stderr, 1, "log status: %v", err)
	}
	v, err := c.Verdict(ctx, pos[0], *replicas)
	if err != nil {
		return errorf(stderr, 1, "log status: %v", err)
	}
	if *f.json {
		printJSON(stdout, map[string]any{"stream": info.Stream, "key": info.Key, "checkpoint": info.Checkpoint, "verdict": v})
		return 0
	}
	fmt.Fprintf(stdout, "stream %s: %d entries, root %s, key %s\nverdict: %s (%s)", info.Stream, info.Checkpoint.Size, info.Checkpoint.Root, info.Key, v.State, v.Detail)
	if len(v.Odd) > 0 {
		fmt.Fprintf(stdout, "; odd replicas: %s", strings.Join(v.Odd, ", "))
	}
	fmt.Fprintln(stdout)
	return 0
}

// readLogFile reads and verifies a log file, trusting pub, or (nil) the
// key the log names.
func readLogFile(path string, pub ed25519.PublicKey) (*logd.Verified, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	v, err := logd.ReadFile(f, pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}
