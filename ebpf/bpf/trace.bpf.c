// SPDX-License-Identifier: GPL-2.0
//
// Lockstep's I/O tracer: raw tracepoints on sys_enter and sys_exit, for the
// tasks of one PID namespace (a `lockstep exec` run or a container). At a
// successful exit of a write-like or read-like syscall it copies the bytes
// moved into the ring buffer; sendfile, splice, copy_file_range (and bytes
// it cannot copy) are reported as counts. See docs/ebpf.md.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

// x86_64 syscall numbers (asm/unistd_64.h).
#define NR_read 0
#define NR_write 1
#define NR_pread64 17
#define NR_pwrite64 18
#define NR_readv 19
#define NR_writev 20
#define NR_sendfile 40
#define NR_execve 59
#define NR_execveat 322
#define NR_sendto 44
#define NR_recvfrom 45
#define NR_sendmsg 46
#define NR_recvmsg 47
#define NR_splice 275
#define NR_tee 276
#define NR_vmsplice 278
#define NR_preadv 295
#define NR_pwritev 296
#define NR_copy_file_range 326
#define NR_preadv2 327
#define NR_pwritev2 328

// struct pt_regs offsets (x86_64).
#define REG_DX 96 // then si (104), di (112) and orig_ax (120)

// Event types; the Go side mirrors them (ebpf/events.go).
#define EV_WRITE 1 // data written
#define EV_READ 2  // data read
#define EV_COUNT 3 // bytes moved that are not copied: sendfile, splice, ... or beyond the copy limit
#define EV_AUDIT 4 // a syscall that can be nondeterministic reached the kernel (data: a path, for opens)

#define CHUNK 16384
#define HEADER 48 // bytes of struct event before data
#define RING_SIZE (32 << 20)
#define WAKE_AT (1 << 20) // bytes in the ring that wake the consumer (submit)
#define MAX_CHUNKS 64 // per iovec: 1 MiB
#define MAX_IOV 16

// Set by the loader.
volatile const __u32 throttle = 0; // stop writers past half full (see stop_if_behind)

#define PATH_MAX_AUDIT 256

struct event {
	__u32 type;
	__u32 nr;      // syscall number
	__u32 pid;     // tgid in the traced namespace
	__u32 tid;     // thread id in the traced namespace
	__u32 host_pid;
	__s32 fd;
	__u64 seq;     // per-thread syscall counter: orders a syscall's chunks
	__u64 offset;  // of this chunk within the syscall's bytes
	__u32 len;     // bytes in data (EV_WRITE, EV_READ) or moved (EV_COUNT)
	__u32 pad;
	__u8 data[CHUNK];
};

// The syscall an event belongs to.
struct call {
	__u64 nr;
	__u64 fd;
	__u64 seq; // the thread's I/O syscall counter
};

struct task_struct;

// Per-thread state, in the thread's own task storage (freed with it),
// made only for the threads of the traced namespace once recording is
// enabled: its IDs there and its I/O syscall counter.
struct thread {
	__u64 seq;
	__u32 stale; // ns must be read again (the thread called execve)
	__u32 pad;
	struct bpf_pidns_info ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread);
} threads SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RING_SIZE);
} events SEC(".maps");

// Events that did not fit in the ring buffer: the Go side fails the run.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

// SIGSTOPs sent by stop_if_behind: lockstep's ptrace tracer absorbs as
// many, and no others.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} stops SEC(".maps");

// The PID namespace traced (the device and inode of its /proc/PID/ns/pid),
// set by user space when the traced command starts (its first execve), so
// that the launcher's own I/O is not recorded: until then, inode 0, and
// nothing is. (A map, not a constant, so that the programs can be loaded
// before the namespace exists, while the run starts.)
struct target {
	__u64 dev;
	__u64 ino;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct target);
} target SEC(".maps");

static __always_inline int in_ns(struct bpf_pidns_info *ns)
{
	__u32 k = 0;
	struct target *t = bpf_map_lookup_elem(&target, &k);
	if (!t || !t->ino)
		return 0;
	return bpf_get_ns_current_pid_tgid(t->dev, t->ino, ns, sizeof(*ns)) == 0;
}

// A syscall's pt_regs from rdx on: the first three arguments in reverse
// order, then the syscall number.
struct regs_ {
	__u64 dx, si, di, orig_ax;
};

static __always_inline void count_lost(void)
{
	__u32 k = 0;
	__u64 *v = bpf_map_lookup_elem(&lost, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
}

// thread_of returns the calling thread's state if it belongs to the traced
// namespace (making it on the thread's first traced syscall), else NULL.
// The namespace check runs once per thread, and again after an execve,
// which can change a thread's ID.
static __always_inline struct thread *thread_of(void)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct thread *t = bpf_task_storage_get(&threads, task, 0, 0);
	if (t && !t->stale)
		return t;
	struct bpf_pidns_info ns;
	if (!in_ns(&ns))
		return 0;
	if (!t) {
		t = bpf_task_storage_get(&threads, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!t) {
			count_lost();
			return 0;
		}
	}
	t->ns = ns;
	t->stale = 0;
	return t;
}

// execed marks the thread's IDs stale after an execve: a thread that is
// not its process's leader takes the leader's ID.
static __always_inline void execed(void)
{
	struct thread *t = bpf_task_storage_get(&threads, bpf_get_current_task_btf(), 0, 0);
	if (t)
		t->stale = 1;
}

// reads reports whether syscall nr moves bytes into the caller (else out).
static __always_inline int reads(__u64 nr)
{
	switch (nr) {
	case NR_read: case NR_pread64: case NR_readv: case NR_preadv:
	case NR_preadv2: case NR_recvfrom: case NR_recvmsg:
		return 1;
	}
	return 0;
}

static __always_inline int interesting(__u64 nr)
{
	switch (nr) {
	case NR_read: case NR_write: case NR_pread64: case NR_pwrite64:
	case NR_readv: case NR_writev: case NR_preadv: case NR_pwritev:
	case NR_preadv2: case NR_pwritev2: case NR_sendto: case NR_recvfrom:
	case NR_sendmsg: case NR_recvmsg: case NR_sendfile: case NR_splice:
	case NR_tee: case NR_vmsplice: case NR_copy_file_range:
		return 1;
	}
	return 0;
}

static __always_inline void head(struct event *e, struct call *c, struct bpf_pidns_info *ns, __u32 type, __u64 offset)
{
	e->type = type;
	e->nr = (__u32)c->nr;
	e->pid = ns->tgid;
	e->tid = ns->pid;
	e->host_pid = bpf_get_current_pid_tgid() >> 32;
	e->fd = (__s32)c->fd;
	e->seq = c->seq;
	e->offset = offset;
	e->pad = 0;
}

// submit commits a reserved event of size bytes (as reserved). It wakes
// the consumer only when this event takes the ring past WAKE_AT;
// otherwise the consumer polls (every 20 ms). A consumer woken reads
// until the ring is empty, so one wake-up per crossing is enough, and a
// wake-up (an interrupt on this CPU) is not paid per event.
static __always_inline void submit(struct event *e, __u64 size)
{
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA); // this event included
	__u64 flags = BPF_RB_NO_WAKEUP;
	if (avail > WAKE_AT && avail - size - 8 <= WAKE_AT)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

static __always_inline void report_count(struct call *c, struct bpf_pidns_info *ns, __u64 n, __u64 offset)
{
	struct event *e = bpf_ringbuf_reserve(&events, HEADER, 0);
	if (!e) {
		count_lost();
		return;
	}
	head(e, c, ns, EV_COUNT, offset);
	e->len = (__u32)n;
	submit(e, HEADER);
}

struct iovec_ {
	__u64 base;
	__u64 len;
};

struct msghdr_ {
	__u64 name;
	__u32 namelen;
	__u32 pad;
	__u64 iov;
	__u64 iovlen;
};

// A copy in progress: one bpf_loop step sends one chunk, moving to the
// next iovec when the current one is done. It lives in a per-CPU map, not
// on the stack, so that the verifier does not follow its values from step
// to step (it would not converge).
struct copier {
	struct call c;
	struct bpf_pidns_info ns;
	__u32 type;
	__u32 vector; // iov/cnt is an iovec array (else base/left is the buffer)
	__u64 iov, cnt, idx;
	__u64 base, left; // the current buffer
	__u64 remaining;  // bytes of the syscall's result not sent yet
	__u64 done;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct copier);
} copiers SEC(".maps");

// copy_into reserves an event of HEADER + SIZE bytes (a size class: the
// ring's reserve takes only constant sizes) and copies len <= SIZE bytes
// at x->base into it: one copy, from the caller's buffer into the ring.
#define copy_into(SIZE) do { \
	struct event *e = bpf_ringbuf_reserve(&events, HEADER + (SIZE), 0); \
	if (!e) { \
		count_lost(); \
		return -1; \
	} \
	head(e, &x->c, &x->ns, x->type, x->done); \
	e->len = (__u32)len; \
	if (bpf_probe_read_user(e->data, len, (void *)x->base) < 0) { \
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP); \
		return -1; \
	} \
	submit(e, HEADER + (SIZE)); \
	return 0; \
} while (0)

// emit_part sends the len (at most CHUNK) bytes at x->base, offset
// x->done in the syscall's bytes, as one event, in the smallest size class
// that holds them (at most twice their size, so the ring fills at most
// twice as fast as with exact sizes). A global function: the verifier
// checks it once, not at each call (that took 7.6 ms of each run's start).
__noinline int emit_part(struct copier *x, __u64 len)
{
	if (!x)
		return -1;
	if (len <= 64)
		copy_into(64);
	if (len <= 128)
		copy_into(128);
	if (len <= 256)
		copy_into(256);
	if (len <= 512)
		copy_into(512);
	if (len <= 1024)
		copy_into(1024);
	if (len <= 2048)
		copy_into(2048);
	if (len <= 4096)
		copy_into(4096);
	if (len <= 8192)
		copy_into(8192);
	if (len <= CHUNK)
		copy_into(CHUNK);
	return -1;
}

static long copy_step(__u64 i, void *unused)
{
	__u32 k = 0;
	struct copier *x = bpf_map_lookup_elem(&copiers, &k);
	if (!x || x->remaining == 0)
		return 1;
	if (x->left == 0) {
		if (!x->vector || x->idx >= x->cnt || x->idx >= MAX_IOV)
			return 1;
		struct iovec_ v;
		if (bpf_probe_read_user(&v, sizeof(v), (void *)(x->iov + x->idx * sizeof(v))) < 0)
			return 1;
		x->idx++;
		x->base = v.base;
		x->left = v.len;
		return 0;
	}
	__u64 len = x->left;
	if (len > x->remaining)
		len = x->remaining;
	if (len > CHUNK)
		len = CHUNK;
	if (emit_part(x, len) < 0)
		return 1;
	x->base += len;
	x->left -= len;
	x->remaining -= len;
	x->done += len;
	return 0;
}

// send copies the bytes a syscall moved (x->remaining), from a buffer or
// an iovec array, as x describes them, and counts what it could not copy.
// A global function, checked once by the verifier.
__noinline int send(struct copier *x)
{
	if (!x)
		return 0;
	if (!x->vector && x->remaining <= CHUNK) {
		// One buffer, one event: no loop.
		if (emit_part(x, x->remaining) < 0)
			report_count(&x->c, &x->ns, x->remaining, 0);
		return 0;
	}
	bpf_loop(MAX_CHUNKS * MAX_IOV, copy_step, 0, 0);
	if (x->remaining > 0)
		report_count(&x->c, &x->ns, x->remaining, x->done);
	return 0;
}

// stop_if_behind is the back-pressure: a writer can fill the ring faster
// than the consumer hashes (memory copies run at several GB/s, BLAKE3 at
// one or two), and an event that does not fit fails the run. When the
// ring is past half full after a syscall, the thread is sent SIGSTOP, which
// lockstep's ptrace tracer receives at the thread's return to user space
// (a signal-delivery-stop) and does not deliver: it holds the thread until
// the consumer has caught up, then resumes it with no signal. The syscall
// has completed, so the program sees nothing but time pass. The loader
// sets throttle only when every thread that does I/O in the namespace is
// ptraced by lockstep (any other would really stop). (The check is not
// made here: reading task_struct's ptrace field needs its offset from the
// kernel's BTF, and loading that costs each run 30 ms.)
static __always_inline void stop_if_behind(void)
{
	if (!throttle || bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) <= RING_SIZE / 2)
		return;
	if (bpf_send_signal_thread(19 /* SIGSTOP */) == 0) {
		__u32 k = 0;
		__u64 *v = bpf_map_lookup_elem(&stops, &k);
		if (v)
			__sync_fetch_and_add(v, 1);
	}
}

// sys_exit does all the I/O work, at the exit: the bytes are then in the
// buffer, the result says how many, and the syscall's number and arguments
// are still in its pt_regs (as the kernel ran it, after seccomp and the
// tracer). No program runs at the entry of every syscall for I/O.
SEC("raw_tracepoint/sys_exit")
int sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct regs_ r = {};
	bpf_probe_read_kernel(&r, sizeof(r), (void *)ctx->args[0] + REG_DX);
	__s64 ret = (__s64)ctx->args[1];
	if (!interesting(r.orig_ax)) {
		if ((r.orig_ax == NR_execve || r.orig_ax == NR_execveat) && ret == 0)
			execed();
		return 0;
	}
	if (ret <= 0)
		return 0;
	struct thread *t = thread_of();
	if (!t)
		return 0;
	__u32 k = 0;
	struct copier *x = bpf_map_lookup_elem(&copiers, &k);
	if (!x)
		return 0;
	t->seq++;
	x->c.nr = r.orig_ax;
	x->c.fd = r.di;
	x->c.seq = t->seq;
	x->ns = t->ns;
	x->type = reads(r.orig_ax) ? EV_READ : EV_WRITE;
	x->idx = 0;
	x->remaining = (__u64)ret;
	x->done = 0;
	// The bytes: one buffer (si), an iovec array (si, dx iovecs), or a
	// msghdr's iovec array.
	x->vector = 0;
	x->base = r.si;
	x->left = (__u64)ret;
	switch (r.orig_ax) {
	case NR_write: case NR_pwrite64: case NR_sendto:
	case NR_read: case NR_pread64: case NR_recvfrom:
		break;
	case NR_writev: case NR_pwritev: case NR_pwritev2:
	case NR_readv: case NR_preadv: case NR_preadv2:
		x->vector = 1;
		x->iov = r.si;
		x->cnt = r.dx;
		x->base = x->left = 0;
		break;
	case NR_sendmsg: case NR_recvmsg: {
		struct msghdr_ m;
		if (bpf_probe_read_user(&m, sizeof(m), (void *)r.si) < 0) {
			report_count(&x->c, &x->ns, x->remaining, 0);
			return 0;
		}
		x->vector = 1;
		x->iov = m.iov;
		x->cnt = m.iovlen;
		x->base = x->left = 0;
		break;
	}
	default: // sendfile, splice, tee, vmsplice, copy_file_range
		report_count(&x->c, &x->ns, x->remaining, 0);
		return 0;
	}
	send(x);
	stop_if_behind();
	return 0;
}

// Syscalls that can be nondeterministic and reach the kernel although the
// profile routes them elsewhere (an escape), or that the profile lets
// through: host-time timers, and opens (user space matches the path).
static __always_inline int audited(__u64 nr)
{
	switch (nr) {
	case 2: case 257: case 437:         // open, openat, openat2
	case 228: case 96: case 201: case 229: // clock_gettime, gettimeofday, time, clock_getres
	case 318: case 204: case 63: case 99: case 309: // getrandom, sched_getaffinity, uname, sysinfo, getcpu
	case 36: case 37: case 38: case 224: case 287: // getitimer, alarm, setitimer, timer_gettime, timerfd_gettime
		return 1;
	}
	return 0;
}

static __always_inline void audit(void *regs, __u64 nr, struct bpf_pidns_info *ns)
{
	struct event *e = bpf_ringbuf_reserve(&events, HEADER + PATH_MAX_AUDIT, 0);
	if (!e) {
		count_lost();
		return;
	}
	struct call c = {.nr = nr, .fd = -1};
	head(e, &c, ns, EV_AUDIT, 0);
	e->len = 0;
	struct regs_ r = {};
	bpf_probe_read_kernel(&r, sizeof(r), regs + REG_DX);
	__u64 path = nr == 2 ? r.di : (nr == 257 || nr == 437) ? r.si : 0;
	if (path) {
		long n = bpf_probe_read_user_str(e->data, PATH_MAX_AUDIT, (void *)path);
		if (n > 0)
			e->len = (__u32)(n - 1);
	}
	submit(e, HEADER + PATH_MAX_AUDIT);
}

// sys_enter reports the audited syscalls (attached only for an audit): it
// fires after seccomp, so a syscall the agent answered never reaches it.
SEC("raw_tracepoint/sys_enter")
int sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 nr = ctx->args[1];
	if (!audited(nr)) {
		if (nr == NR_execve || nr == NR_execveat)
			execed();
		return 0;
	}
	struct thread *t = thread_of();
	if (t)
		audit((void *)ctx->args[0], nr, &t->ns);
	return 0;
}
