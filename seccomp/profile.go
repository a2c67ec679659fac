package seccomp

import (
	"fmt"
	"syscall"
)

// Action says where a matching syscall goes.
type Action int

const (
	ActAllow  Action = iota // run natively
	ActNotify               // answered by the notify agent
	ActTrace                // ptrace seccomp stop, fixed up by the tracer
	ActErrno                // fail with Rule.Errno
)

func (a Action) String() string {
	switch a {
	case ActAllow:
		return "allow"
	case ActNotify:
		return "notify"
	case ActTrace:
		return "trace"
	case ActErrno:
		return "errno"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// Op is a comparison on one 64-bit syscall argument.
type Op int

const (
	OpEq         Op = iota // arg == Value
	OpNe                   // arg != Value
	OpMaskedEq             // arg & Mask == Value
	OpPositive32           // int32(arg) > 0: a timeout in milliseconds that can expire
)

// Cond is one argument comparison. A rule matches when all its Conds hold.
type Cond struct {
	Arg   uint // 0..5
	Op    Op
	Value uint64
	Mask  uint64 // OpMaskedEq only
}

func (c Cond) holds(args [6]uint64) bool {
	a := args[c.Arg]
	switch c.Op {
	case OpEq:
		return a == c.Value
	case OpNe:
		return a != c.Value
	case OpMaskedEq:
		return a&c.Mask == c.Value
	case OpPositive32:
		return int32(a) > 0
	}
	return false
}

// Rule routes one syscall. Rules for the same syscall must not overlap:
// libseccomp (used by runc) has no rule order, so the table keeps at most
// one rule per syscall and at most one condition per rule.
type Rule struct {
	Name   string
	Nr     uint32
	Action Action
	Errno  syscall.Errno // ActErrno only
	Cond   *Cond         // nil: unconditional
}

// Audit architecture numbers and limits (linux/audit.h, asm/unistd.h).
const (
	auditArchX86_64 = 0xc000003e
	x32SyscallBit   = 0x40000000
)

// x86_64 syscall numbers of the rules, from asm/unistd_64.h. They are
// spelled out here (not taken from x/sys/unix) so that the profile and its
// tests build on every platform.
const (
	sysOpen             = 2
	sysStat             = 4
	sysFstat            = 5
	sysLstat            = 6
	sysPoll             = 7
	sysMmap             = 9
	sysSelect           = 23
	sysNanosleep        = 35
	sysGetitimer        = 36
	sysAlarm            = 37
	sysSetitimer        = 38
	sysKill             = 62
	sysTimerCreate      = 222
	sysTimerSettime     = 223
	sysTimerGettime     = 224
	sysTimerGetoverrun  = 225
	sysTimerDelete      = 226
	sysGettimeofday     = 96
	sysGetrusage        = 98
	sysSysinfo          = 99
	sysTimes            = 100
	sysSyslog           = 103
	sysPersonality      = 135
	sysStatfs           = 137
	sysConnect          = 42
	sysSendto           = 44
	sysSendmsg          = 46
	sysSendmmsg         = 307
	sysFstatfs          = 138
	sysPrctl            = 157
	sysArchPrctl        = 158
	sysAdjtimex         = 159
	sysSettimeofday     = 164
	sysSethostname      = 170
	sysSetdomainname    = 171
	sysUname            = 63
	sysWait4            = 61
	sysGetdents         = 78
	sysTime             = 201
	sysFutex            = 202
	sysSchedGetaffinity = 204
	sysIoSetup          = 206
	sysIoDestroy        = 207
	sysIoGetevents      = 208
	sysIoSubmit         = 209
	sysIoCancel         = 210
	sysGetdents64       = 217
	sysClockSettime     = 227
	sysClockGettime     = 228
	sysClockGetres      = 229
	sysClockNanosleep   = 230
	sysEpollWait        = 232
	sysWaitid           = 247
	sysOpenat           = 257
	sysNewfstatat       = 262
	sysPselect6         = 270
	sysPpoll            = 271
	sysEpollPwait       = 281
	sysRtSigtimedwait   = 128
	sysPerfEventOpen    = 298
	sysClockAdjtime     = 305
	sysGetcpu           = 309
	sysGetrandom        = 318
	sysStatx            = 332
	sysIoPgetevents     = 333
	sysRseq             = 334
	sysIoUringSetup     = 425
	sysIoUringEnter     = 426
	sysIoUringRegister  = 427
	sysOpenat2          = 437
	sysEpollPwait2      = 441
	sysFutexWaitv       = 449
)

// Flag values the conditions test.
const (
	personalityAddrNoRandomize = 0x0040000
	prSetTSC                   = 26
	archSetCPUID               = 0x1012
	mapDroppable               = 0x08
	futexCmdMask               = 0x7f
)

func notify(name string, nr uint32) Rule { return Rule{Name: name, Nr: nr, Action: ActNotify} }

func trace(name string, nr uint32) Rule { return Rule{Name: name, Nr: nr, Action: ActTrace} }

// traceIf traces the syscall only when its argument arg is non-zero: a
// timeout, a rusage pointer.
func traceIf(name string, nr uint32, arg uint) Rule {
	return Rule{Name: name, Nr: nr, Action: ActTrace, Cond: &Cond{Arg: arg, Op: OpNe, Value: 0}}
}

// timed traces the syscall only when its argument arg, a timeout in
// milliseconds (an int), is positive.
func timed(name string, nr uint32, arg uint) Rule {
	return Rule{Name: name, Nr: nr, Action: ActTrace, Cond: &Cond{Arg: arg, Op: OpPositive32}}
}

func deny(name string, nr uint32, e syscall.Errno) Rule {
	return Rule{Name: name, Nr: nr, Action: ActErrno, Errno: e}
}

// Rules is the determinism profile. See docs/determinism.md for why each
// syscall is here.
func Rules() []Rule {
	return []Rule{
		// Clocks, sleeps and timers' clock: answered from virtual time.
		notify("clock_gettime", sysClockGettime),
		notify("clock_getres", sysClockGetres),
		notify("gettimeofday", sysGettimeofday),
		notify("time", sysTime),
		notify("clock_nanosleep", sysClockNanosleep),
		notify("nanosleep", sysNanosleep),
		notify("times", sysTimes),
		notify("getrusage", sysGetrusage),
		// Interval timers: kept on the virtual clocks, fired where the
		// process's time reaches them (virt.Timers).
		notify("alarm", sysAlarm),
		notify("setitimer", sysSetitimer),
		notify("getitimer", sysGetitimer),
		notify("timer_create", sysTimerCreate),
		notify("timer_settime", sysTimerSettime),
		notify("timer_gettime", sysTimerGettime),
		notify("timer_getoverrun", sysTimerGetoverrun),
		notify("timer_delete", sysTimerDelete),
		// Signals between the run's processes land where the receiver's
		// time reaches the sender's, as a timer's do.
		notify("kill", sysKill),
		// Entropy.
		notify("getrandom", sysGetrandom),
		// Host identity.
		notify("uname", sysUname),
		notify("sysinfo", sysSysinfo),
		notify("getcpu", sysGetcpu),
		notify("sched_getaffinity", sysSchedGetaffinity),
		// Files whose contents are host identity or entropy, and directory order.
		notify("open", sysOpen),
		notify("openat", sysOpenat),
		notify("openat2", sysOpenat2),
		notify("getdents", sysGetdents),
		notify("getdents64", sysGetdents64),
		// Filesystem size: answered by the agent, which runs the call on
		// the caller's file and fixes the sizes. Notified, not traced,
		// because runc's init calls fstatfs after it installed the filter
		// and before any tracer is attached.
		notify("statfs", sysStatfs),
		notify("fstatfs", sysFstatfs),
		// Reaching other hosts: run natively, and noted, since what they
		// send back is input an exec's log does not hold.
		notify("connect", sysConnect),
		{Name: "sendto", Nr: sysSendto, Action: ActNotify, Cond: &Cond{Arg: 4, Op: OpNe, Value: 0}},
		// The address of sendmsg and sendmmsg is inside the message
		// header, where a filter cannot look: every one is notified, and
		// one without an address runs on at once.
		notify("sendmsg", sysSendmsg),
		notify("sendmmsg", sysSendmmsg),

		// Results fixed up at syscall exit: inode numbers, devices, times.
		trace("stat", sysStat),
		notify("fstat", sysFstat),
		trace("lstat", sysLstat),
		trace("newfstatat", sysNewfstatat),
		trace("statx", sysStatx),
		trace("wait4", sysWait4),   // rusage; the reaped child's clocks
		trace("waitid", sysWaitid), // rusage; the reaped child's clocks
		// Waits with a timeout: an expired timeout advances virtual time.
		// A timeout of 0 (a poll) or negative (none) moves no time: not traced.
		timed("poll", sysPoll, 2),
		traceIf("ppoll", sysPpoll, 2),
		traceIf("select", sysSelect, 4),
		traceIf("pselect6", sysPselect6, 4),
		timed("epoll_wait", sysEpollWait, 3),
		timed("epoll_pwait", sysEpollPwait, 3),
		traceIf("epoll_pwait2", sysEpollPwait2, 3),
		traceIf("futex", sysFutex, 3),
		traceIf("futex_waitv", sysFutexWaitv, 3),
		traceIf("rt_sigtimedwait", sysRtSigtimedwait, 2),
		// CPUID faulting is re-armed by the tracer after each execve; the
		// program itself may not turn it off.
		{Name: "arch_prctl", Nr: sysArchPrctl, Action: ActTrace, Cond: &Cond{Arg: 0, Op: OpEq, Value: archSetCPUID}},
		// rdtsc stays trapping: the tracer lets prctl(PR_SET_TSC,
		// PR_TSC_SIGSEGV) through (a container's exec helper arms it after
		// runc installed this filter) and refuses PR_TSC_ENABLE.
		{Name: "prctl", Nr: sysPrctl, Action: ActTrace, Cond: &Cond{Arg: 0, Op: OpEq, Value: prSetTSC}},

		// Denied: asynchronous kernel interfaces, and ways to undo the setup.
		deny("io_uring_setup", sysIoUringSetup, syscall.ENOSYS),
		deny("io_uring_enter", sysIoUringEnter, syscall.ENOSYS),
		deny("io_uring_register", sysIoUringRegister, syscall.ENOSYS),
		deny("io_setup", sysIoSetup, syscall.ENOSYS),
		deny("io_destroy", sysIoDestroy, syscall.ENOSYS),
		deny("io_submit", sysIoSubmit, syscall.ENOSYS),
		deny("io_cancel", sysIoCancel, syscall.ENOSYS),
		deny("io_getevents", sysIoGetevents, syscall.ENOSYS),
		deny("io_pgetevents", sysIoPgetevents, syscall.ENOSYS),
		deny("perf_event_open", sysPerfEventOpen, syscall.ENOSYS),
		// rseq publishes the current CPU number in user memory.
		deny("rseq", sysRseq, syscall.ENOSYS),
		deny("adjtimex", sysAdjtimex, syscall.EPERM),
		deny("clock_adjtime", sysClockAdjtime, syscall.EPERM),
		deny("settimeofday", sysSettimeofday, syscall.EPERM),
		deny("clock_settime", sysClockSettime, syscall.EPERM),
		deny("syslog", sysSyslog, syscall.EPERM),
		deny("sethostname", sysSethostname, syscall.EPERM),
		deny("setdomainname", sysSetdomainname, syscall.EPERM),
		// personality() may not clear ADDR_NO_RANDOMIZE (0xffffffff, the
		// query, has it set and passes).
		{Name: "personality", Nr: sysPersonality, Action: ActErrno, Errno: syscall.EPERM,
			Cond: &Cond{Arg: 0, Op: OpMaskedEq, Mask: personalityAddrNoRandomize, Value: 0}},
		// MAP_DROPPABLE backs vDSO getrandom state; without it, libc and Go
		// fall back to the getrandom syscall.
		{Name: "mmap", Nr: sysMmap, Action: ActErrno, Errno: syscall.ENOMEM,
			Cond: &Cond{Arg: 3, Op: OpMaskedEq, Mask: mapDroppable, Value: mapDroppable}},
	}
}

// Lookup returns the rule for syscall nr with the given arguments, and
// ActAllow when none matches: what the compiled filter decides.
func Lookup(rules []Rule, nr uint32, args [6]uint64) (Rule, bool) {
	for _, r := range rules {
		if r.Nr == nr && (r.Cond == nil || r.Cond.holds(args)) {
			return r, true
		}
	}
	return Rule{Nr: nr, Action: ActAllow}, false
}

// Check reports a table that breaks the one-rule-per-syscall invariant.
func Check(rules []Rule) error {
	seen := map[uint32]string{}
	for _, r := range rules {
		if prev, ok := seen[r.Nr]; ok {
			return fmt.Errorf("syscall %d has two rules (%s, %s)", r.Nr, prev, r.Name)
		}
		seen[r.Nr] = r.Name
		if r.Cond != nil && r.Cond.Arg > 5 {
			return fmt.Errorf("%s: argument %d out of range", r.Name, r.Cond.Arg)
		}
		if r.Action == ActErrno && r.Errno == 0 {
			return fmt.Errorf("%s: errno rule without an errno", r.Name)
		}
	}
	return nil
}
