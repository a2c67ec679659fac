//go:build linux

package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	runtimeoptions "github.com/containerd/containerd/pkg/runtimeoptions/v1"
	"github.com/containerd/containerd/pkg/shutdown"
	"github.com/containerd/containerd/plugin"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime/v2/runc/manager"
	"github.com/containerd/containerd/runtime/v2/runc/task"
	"github.com/containerd/containerd/runtime/v2/shim"
	"github.com/containerd/containerd/sys/reaper"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	"github.com/lockstep-run/lockstep/hostcap"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// RuntimeName is the runtime type containerd users select.
const RuntimeName = "io.containerd.lockstep.v1"

// Register registers the Lockstep task service as the shim's "task" TTRPC
// plugin: runc's task service with Create, Exec, Wait and Delete wrapped,
// and its TaskExit events held until the output is drained.
//
// It measures what the host cannot make deterministic first
// (hostcap.Leaks runs probe programs as children): the shim reaps every
// child once it serves.
func Register() {
	hostcap.Leaks()
	plugin.Register(&plugin.Registration{
		Type:     plugin.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugin.EventPlugin, plugin.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (interface{}, error) {
			pp, err := ic.GetByID(plugin.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugin.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			s := &service{agents: map[string]*agentProc{}}
			pub := drainingPublisher{Publisher: pp.(shim.Publisher), stdio: &s.stdio}
			s.TaskService, err = task.NewTaskService(ic.Context, pub, ss.(shutdown.Service))
			if err != nil {
				return nil, err
			}
			return s, nil
		},
	})
}

// NewManager returns the shim manager: runc's, which starts this binary as
// the shim, with Stop also cleaning up the container's agent directory
// after a shim crash.
func NewManager() shim.Manager { return stopCleaner{manager.NewShimManager(RuntimeName)} }

type stopCleaner struct{ shim.Manager }

func (m stopCleaner) Stop(ctx context.Context, id string) (shim.StopStatus, error) {
	if cwd, err := os.Getwd(); err == nil {
		os.RemoveAll(StateDir(stateRoot(), filepath.Join(filepath.Dir(cwd), id)))
	}
	return m.Manager.Stop(ctx, id)
}

func stateRoot() string {
	if d := os.Getenv("LOCKSTEP_STATE_DIR"); d != "" {
		return d
	}
	return DefaultStateDir
}

// service is runc's task service, made deterministic.
type service struct {
	taskAPI.TaskService

	mu     sync.Mutex
	agents map[string]*agentProc // by container ID

	stdio stdio // output FIFOs, drained before an exit is reported
}

// agentProc is a container's agent process.
type agentProc struct {
	cmd      *exec.Cmd
	dir      string
	stopping chan struct{} // closed when the shim stops it
	exited   chan struct{} // closed when it has been reaped
	stdio    *directStdio  // the init's FIFOs, if it uses them directly
}

func (s *service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTaskService(server, s)
	return nil
}

// Create rewrites the bundle's config.json, starts the container's agent
// and then lets runc create the container (runc connects to the agent's
// seccomp listener before it returns).
func (s *service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, retErr error) {
	created := time.Now()
	settings := DefaultSettings()
	if r.Options.GetValue() != nil {
		v, err := typeurl.UnmarshalAny(r.Options)
		if err != nil {
			return nil, fmt.Errorf("lockstep: runtime options: %w", err)
		}
		if o, ok := v.(*runtimeoptions.Options); ok {
			// CRI's options for a non-runc runtime: ours, not runc's.
			if err := applyRuntimeOptions(&settings, o); err != nil {
				return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "lockstep: %v", err)
			}
			r.Options = nil
		}
	}
	specPath := filepath.Join(r.Bundle, "config.json")
	spec, err := readSpec(specPath)
	if err != nil {
		return nil, err
	}
	if err := settings.ApplyAnnotations(spec.Annotations); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "lockstep: %v", err)
	}
	if err := checkHost(ctx, r.ID, settings.Require); err != nil {
		return nil, err
	}
	helper, err := helperPath()
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "lockstep: %v", err)
	}
	dir := StateDir(stateRoot(), r.Bundle)
	if err := RewriteSpec(spec, &settings, dir, helper); err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "lockstep: %v", err)
	}
	if err := writeSpec(specPath, spec); err != nil {
		return nil, err
	}
	direct, err := openDirectStdio(r, spec)
	if err != nil {
		return nil, err
	}
	cfg := agentConfig{ID: r.ID, Settings: settings, Stderr: r.Stderr, Helper: helper, Created: created}
	var given []*os.File
	if direct != nil {
		cfg.Stdio, given = direct.std, direct.given
	}
	ap, err := startAgent(ctx, dir, cfg, given...)
	direct.handedOver()
	if err != nil {
		direct.close()
		return nil, fmt.Errorf("lockstep: start the agent: %w", err)
	}
	ap.stdio = direct
	defer func() {
		if retErr != nil {
			ap.stop()
		}
	}()
	stdout, stderr := r.Stdout, r.Stderr
	if direct != nil {
		r.Stdin, r.Stdout, r.Stderr = "", "", "" // runc makes no pipes and copies nothing
	}
	resp, err := s.TaskService.Create(ctx, r)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.agents[r.ID] = ap
	s.mu.Unlock()
	s.stdio.add(r.ID, "", stdout, stderr)
	go s.watch(r.ID, ap)
	return resp, nil
}

// checkHost refuses a container that requires a source this host cannot
// make deterministic, and otherwise says in the shim's log what leaks.
func checkHost(ctx context.Context, id string, required []string) error {
	leaks, err := hostcap.Leaks()
	if err != nil {
		return errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "lockstep: %v", err)
	}
	if err := hostcap.Require(required, leaks); err != nil {
		return errdefs.ToGRPCf(errdefs.ErrFailedPrecondition, "lockstep: %s: %v", AnnotationRequire, err)
	}
	if w := hostcap.Warning(leaks); w != "" {
		log.G(ctx).WithField("id", id).Warn("lockstep: " + w)
	}
	return nil
}

func applyRuntimeOptions(s *Settings, o *runtimeoptions.Options) error {
	if len(o.ConfigBody) > 0 {
		return s.applyTOML("(config body)", o.ConfigBody)
	}
	if o.ConfigPath != "" {
		return s.ApplyOptionsFile(o.ConfigPath)
	}
	return nil
}

// watch kills the container if its agent dies under it: no container
// runs without its agent (fail closed).
func (s *service) watch(id string, ap *agentProc) {
	<-ap.exited
	select {
	case <-ap.stopping:
		return
	default:
	}
	ctx := context.Background()
	log.G(ctx).WithField("id", id).Error("lockstep: the agent died; killing the container")
	s.TaskService.Kill(ctx, &taskAPI.KillRequest{ID: id, Signal: uint32(unix.SIGKILL), All: true})
}

// Exec puts the exec helper in front of the new process's command. runc
// sends the process's seccomp listener to the container's agent.
func (s *service) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*ptypes.Empty, error) {
	if r.Spec == nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "lockstep: exec without a process spec")
	}
	var p specs.Process
	if err := json.Unmarshal(r.Spec.GetValue(), &p); err != nil || len(p.Args) == 0 {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "lockstep: exec process spec: %v", err)
	}
	WrapProcess(&p)
	b, err := json.Marshal(&p)
	if err != nil {
		return nil, err
	}
	r.Spec.Value = b
	resp, err := s.TaskService.Exec(ctx, r)
	if err == nil {
		s.stdio.add(r.ID, r.ExecID, r.Stdout, r.Stderr)
	}
	return resp, err
}

// State reports the init's stdio as the client gave it, also when the
// container reads and writes the FIFOs directly.
func (s *service) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	resp, err := s.TaskService.State(ctx, r)
	if err != nil || r.ExecID != "" {
		return resp, err
	}
	s.mu.Lock()
	ap := s.agents[r.ID]
	s.mu.Unlock()
	if ap != nil && ap.stdio != nil {
		resp.Stdin, resp.Stdout, resp.Stderr = ap.stdio.paths[0], ap.stdio.paths[1], ap.stdio.paths[2]
	}
	return resp, nil
}

// Wait returns a process's exit once its output is drained (drain_linux.go).
func (s *service) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	resp, err := s.TaskService.Wait(ctx, r)
	if err == nil {
		s.stdio.wait(ctx, r.ID, r.ExecID)
	}
	return resp, err
}

// Delete deletes the container, then stops its agent and removes its
// directory (sockets, helper mount point).
func (s *service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	resp, err := s.TaskService.Delete(ctx, r)
	if err != nil {
		return resp, err
	}
	s.stdio.remove(r.ID, r.ExecID)
	if r.ExecID != "" {
		return resp, err
	}
	s.mu.Lock()
	ap := s.agents[r.ID]
	delete(s.agents, r.ID)
	s.mu.Unlock()
	if ap != nil {
		ap.stop()
	}
	return resp, nil
}

func readSpec(path string) (*specs.Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("lockstep: %s: %w", path, err)
	}
	return &spec, nil
}

func writeSpec(path string, spec *specs.Spec) error {
	b, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	tmp := path + ".lockstep"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// helperPath finds lockstep-shim-exec: $LOCKSTEP_SHIM_EXEC, or beside the
// shim's own executable.
func helperPath() (string, error) {
	p := os.Getenv("LOCKSTEP_SHIM_EXEC")
	if p == "" {
		self, err := os.Executable()
		if err != nil {
			return "", err
		}
		p = filepath.Join(filepath.Dir(self), HelperName)
	}
	if st, err := os.Stat(p); err != nil || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s is missing or not executable: install it beside the shim (make install)", p)
	}
	return p, nil
}

// fixTimes gives the container's directory, what it holds and the exec
// helper the time 0: they are visible inside the container (ls -la /,
// stat /.lockstep/exec), made before its clocks start, and their host
// times (when the container was created, when Lockstep was installed)
// would differ from provider to provider.
func fixTimes(dir, helper string) error {
	epoch := time.Unix(0, 0)
	names, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	paths := []string{helper, dir}
	for _, n := range names {
		paths = append(paths, filepath.Join(dir, n.Name()))
	}
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.ModTime().Equal(epoch) {
			continue
		}
		if err := os.Chtimes(p, epoch, epoch); err != nil {
			return fmt.Errorf("set the time of %s, visible in the container: %w", p, err)
		}
	}
	return nil
}

// startAgent makes the container's directory and sockets and starts its
// agent process (this binary, as AgentArg0).
func startAgent(ctx context.Context, dir string, cfg agentConfig, stdio ...*os.File) (_ *agentProc, retErr error) {
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, err
	}
	defer func() {
		if retErr != nil {
			os.RemoveAll(dir)
		}
	}()
	// The mount point of the exec helper inside the container.
	if err := os.WriteFile(filepath.Join(dir, "exec"), nil, 0o555); err != nil {
		return nil, err
	}
	seccompLn, err := listen(filepath.Join(dir, SeccompSocket), 0o600)
	if err != nil {
		return nil, err
	}
	defer seccompLn.Close()
	// Any user in the container may start a process: the helper connects
	// as whatever user it runs as.
	execLn, err := listen(filepath.Join(dir, AgentSocket), 0o777)
	if err != nil {
		return nil, err
	}
	defer execLn.Close()
	if err := fixTimes(dir, cfg.Helper); err != nil {
		return nil, err
	}
	arg, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:       self,
		Args:       []string{AgentArg0, string(arg)},
		Stdout:     os.Stderr, // the shim's log
		Stderr:     os.Stderr,
		ExtraFiles: append([]*os.File{seccompLn, execLn}, stdio...),
		SysProcAttr: &syscall.SysProcAttr{
			Pdeathsig: unix.SIGKILL,
			Setpgid:   true,
		},
	}
	ec, err := reaper.Default.Start(cmd)
	if err != nil {
		return nil, err
	}
	ap := &agentProc{cmd: cmd, dir: dir, stopping: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		status, _ := reaper.Default.Wait(cmd, ec)
		if status != 0 {
			log.G(ctx).WithField("dir", dir).Warnf("lockstep agent exited with status %d", status)
		}
		close(ap.exited)
	}()
	return ap, nil
}

func listen(path string, mode os.FileMode) (*os.File, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(path, mode); err != nil {
		return nil, err
	}
	return ln.File()
}

// stop ends the agent (the container's processes are gone) and removes
// its directory.
func (ap *agentProc) stop() {
	close(ap.stopping)
	ap.cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-ap.exited:
	case <-time.After(5 * time.Second):
		ap.cmd.Process.Kill()
		<-ap.exited
	}
	os.RemoveAll(ap.dir)
	ap.stdio.close()
}
