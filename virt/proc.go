package virt

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// proc is one process of the tree: its name, its entropy streams and its
// clocks.
//
// A process is named by its place in the tree, not by its PID or by when
// it asks: the first root is "1", the k-th process that "1.0" forks is
// "1.0.k" (Root, Fork). Its values are drawn from streams of that name, so
// concurrent processes (the two sides of a pipe) get the same values in
// any order. Its clocks are its own too, a Lamport clock: a child starts
// with its parent's time at fork, each process advances its own clocks by
// its reads and sleeps, and a parent's clocks move up to a child's when it
// reaps the child with wait (Reaped), the point where the parent learns
// what the child did. Reads do not move a process's time (see SpinReads):
// its waits do.
type proc struct {
	name      string
	parent    *proc
	nspid     int32            // its PID in its namespace, as its parent's wait returns it
	start     time.Duration    // its monotonic clock when it started
	forks     uint64           // children forked so far
	execs     uint64           // execve calls so far
	opens     uint64           // entropy devices opened so far
	uuids     uint64           // /proc/sys/kernel/random/uuid reads so far
	getrandom *rand.ChaCha8    // made at the first getrandom
	clk       [3]time.Duration // each class's counter, from its origin
	exited    []*proc          // children that exited and were not waited for, oldest first
	ended     time.Time        // when it exited (host time), once it has
	page      clockPage        // its clock page (AttachClock), or nil
	release   func()           // unmaps page
	reads     uint64           // wall and monotonic reads since its time moved, without a page
}

// change applies f to pr's clocks, after taking in its spinning reads
// (each read past SpinReads moved its time by one step), and publishes
// them to its page, all under the page's sequence lock; p.mu is held.
func (p *procs) change(pr *proc, f func()) {
	apply := func(reads uint64) (time.Duration, time.Duration) {
		if reads > SpinReads {
			extra := time.Duration(reads-SpinReads) * SpinStep
			pr.clk[Wall] += extra
			pr.clk[Mono] += extra
		}
		// The wall and monotonic clocks move together, as on a machine
		// whose clock nobody sets: by the larger of the two moves.
		w0, m0 := pr.clk[Wall], pr.clk[Mono]
		f()
		d := max(pr.clk[Wall]-w0, pr.clk[Mono]-m0, 0)
		pr.clk[Wall], pr.clk[Mono] = w0+d, m0+d
		p.latest[Wall] = max(p.latest[Wall], pr.clk[Wall])
		p.latest[Mono] = max(p.latest[Mono], pr.clk[Mono])
		return p.wallOrigin + pr.clk[Wall], pr.clk[Mono]
	}
	if pr.page == nil {
		apply(pr.reads)
	} else {
		pr.page.publish(apply)
	}
	pr.reads = 0
}

// detach unmaps pr's page.
func (pr *proc) detach() {
	if pr.release != nil {
		pr.release()
	}
	pr.page, pr.release = nil, nil
}

// maxExited bounds the exited children a process keeps for its waits: a
// process that never waits (SIGCHLD ignored: the kernel reaps) would
// otherwise keep them all. The oldest go first.
const maxExited = 4096

// procs is the world's process table, its clocks included.
type procs struct {
	mu      sync.Mutex
	byTgid  map[int32]*proc // by host thread group ID
	unknown *proc           // processes never announced (not traced from their start)
	// gen counts the changes of byTgid (a process announced or ended): a
	// look at the processes' states is good only if no process came
	// between listing them and looking.
	gen uint64

	wallOrigin time.Duration    // the epoch, from the Unix epoch: what a page's wall clock adds
	run        bool             // the command has started: clocks move
	latest     [3]time.Duration // the latest time of each class any process has seen: a new root's start
}

func newProcs(epoch time.Time) *procs {
	p := &procs{byTgid: map[int32]*proc{}, wallOrigin: time.Duration(epoch.UnixNano())}
	p.latest[Mono] = monoStart
	p.latest[CPU] = cpuStart
	p.unknown = &proc{name: "?", clk: p.latest, start: monoStart}
	return p
}

// get returns tgid's process; p.mu is held.
func (p *procs) get(tgid int32) *proc {
	if pr := p.byTgid[tgid]; pr != nil {
		return pr
	}
	return p.unknown
}

// Root announces tgid as root number n of a process tree: 1 the traced
// command or a container's init, then each process exec'd into the
// container in the order the runtime handed it over. The number names
// it (its entropy streams are named after it), not the order roots are
// announced in, which the host's timing decides: a container's init is
// announced after its exec'd process when loading the eBPF watches takes
// longer than the exec does. It starts at the latest time any process
// has seen.
func (w *World) Root(tgid int32, n uint64) {
	nspid := NSPid(tgid)
	p := w.pr
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	p.byTgid[tgid] = &proc{name: strconv.FormatUint(n, 10), nspid: nspid, clk: p.latest, start: p.latest[Mono]}
}

// Fork announces child, a new process forked by parent (not a thread).
func (w *World) Fork(parent, child int32) {
	nspid := nsPID(child, parent)
	p := w.pr
	p.mu.Lock()
	defer p.mu.Unlock()
	pa := p.get(parent)
	p.gen++
	p.byTgid[child] = &proc{name: pa.name + "." + strconv.FormatUint(pa.forks, 10), parent: pa, nspid: nspid, clk: pa.clk, start: pa.clk[Mono]}
	pa.forks++
}

// Exit notes that process tgid has ended: its parent may still reap it.
func (w *World) Exit(tgid int32) {
	w.Timers().Exit(tgid)
	p := w.pr
	p.mu.Lock()
	defer p.mu.Unlock()
	pr := p.byTgid[tgid]
	if pr == nil {
		return
	}
	delete(p.byTgid, tgid)
	p.gen++
	pr.ended = time.Now()
	pr.detach()
	if pa := pr.parent; pa != nil && pr.nspid != 0 {
		if len(pa.exited) >= maxExited {
			pa.exited = pa.exited[1:]
		}
		pa.exited = append(pa.exited, pr)
	}
	pr.parent = nil // what the parent needs is in its exited list
}

// Reaped notes that process tgid's wait returned its child nspid: its
// clocks move up to the child's.
func (w *World) Reaped(tgid, nspid int32) {
	p := w.pr
	p.mu.Lock()
	defer p.mu.Unlock()
	pa := p.byTgid[tgid]
	if pa == nil {
		return
	}
	// The newest with that PID: an older one's PID was reused, so the
	// kernel reaped it unseen.
	i := len(pa.exited) - 1
	for i >= 0 && pa.exited[i].nspid != nspid {
		i--
	}
	if i < 0 {
		return
	}
	ch := pa.exited[i]
	pa.exited = slices.Delete(pa.exited, i, i+1)
	p.change(pa, func() {
		for c := range pa.clk {
			pa.clk[c] = max(pa.clk[c], ch.clk[c])
		}
	})
}

// nsPID returns child's PID as seen in parent's PID namespace (the NSpid
// lines of /proc/PID/status), or 0.
func nsPID(child, parent int32) int32 {
	c, p := nsPIDs(child), nsPIDs(parent)
	if len(p) == 0 || len(c) < len(p) {
		return 0
	}
	return c[len(p)-1]
}

// NSPid returns pid's PID in its own (innermost) namespace, or 0.
func NSPid(pid int32) int32 {
	ns := nsPIDs(pid)
	if len(ns) == 0 {
		return 0
	}
	return ns[len(ns)-1]
}

// startOf returns the monotonic time at which a process started: host's, if
// not 0, else that of the live process with PID nspid in the run's
// namespace; and whether the process is the run's. One Lockstep did not
// see start (`lockstep exec`'s own init) started with the run.
func (p *procs) startOf(nspid, host int32) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if host != 0 {
		pr := p.get(host)
		return pr.start, pr != p.unknown
	}
	for _, pr := range p.byTgid {
		if pr.nspid == nspid {
			return pr.start, true
		}
	}
	return monoStart, false
}

func nsPIDs(pid int32) []int32 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "NSpid:"); ok {
			var out []int32
			for _, s := range strings.Fields(v) {
				n, _ := strconv.Atoi(s)
				out = append(out, int32(n))
			}
			return out
		}
	}
	return nil
}

// read returns process tgid's counter of class cl. A read does not move
// the process's time, except past SpinReads reads since it last moved:
// then each read adds one step, as the vDSO's reads of the page do (the
// CPU-time clocks: every read steps).
func (p *procs) read(tgid int32, cl Class) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	pr := p.get(tgid)
	if !p.run {
		return pr.clk[cl]
	}
	if cl == CPU {
		v := pr.clk[cl]
		pr.clk[cl] += defaultStep
		return v
	}
	var before uint64
	if pr.page != nil {
		before = pr.page.read()
	} else {
		before = pr.reads
		pr.reads++
	}
	v := pr.clk[cl]
	if before > SpinReads {
		v += time.Duration(before-SpinReads) * SpinStep
	}
	p.latest[cl] = max(p.latest[cl], v)
	return v
}

// peek returns process tgid's counter of class cl.
func (p *procs) peek(tgid int32, cl Class) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.get(tgid).clk[cl]
}

// advance moves process tgid's counter of class cl to at least to, or on
// by by.
func (p *procs) advance(tgid int32, cl Class, to, by time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.run {
		return
	}
	pr := p.get(tgid)
	p.change(pr, func() {
		pr.clk[cl] = max(pr.clk[cl], to) + max(by, 0)
		p.latest[cl] = max(p.latest[cl], pr.clk[cl])
	})
}

// raise moves every process's clocks up to to (from the epoch): the run's
// time reached it (Timeline), at a point where every process waits.
func (p *procs) raise(to time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.byTgid {
		if pr.clk[Wall] < to {
			p.change(pr, func() { pr.clk[Wall] = to })
		}
	}
	if d := to - p.latest[Wall]; d > 0 {
		p.latest[Wall] += d
		p.latest[Mono] += d
	}
}

// tgids lists the processes of the run, none before it starts.
func (p *procs) tgids() []int32 {
	out, _ := p.list()
	return out
}

// list is tgids, and the generation of the list (procs.gen).
func (p *procs) list() ([]int32, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.run {
		return nil, p.gen
	}
	out := make([]int32, 0, len(p.byTgid))
	for tg := range p.byTgid {
		out = append(out, tg)
	}
	return out, p.gen
}

// reaping reports whether a process has a child that exited within
// reapGrace and that it has not waited for yet. Its wait is about to
// return: the kernel wakes it when the tracer has let the child go, and
// on its way out of wait4 it may sleep briefly in the kernel (releasing
// the child's /proc entries), where it looks like a process that waits.
func (p *procs) reaping(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pr := range p.byTgid {
		for _, ch := range pr.exited {
			if now.Sub(ch.ended) < reapGrace {
				return true
			}
		}
	}
	return false
}

// reapGrace bounds how long an exited child's parent counts as about to
// wait for it: a parent that does not wait for its children (it ignores
// them, or waits for another) is not held up longer.
const reapGrace = 100 * time.Millisecond

// generation is procs.gen now.
func (p *procs) generation() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

// start lets the clocks move. Before it (lockstep's own setup code runs
// under the filter until it execs the command) reads and sleeps leave them
// where they are, so that setup timing cannot show in the command's values.
func (p *procs) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.run = true
}
