// SPDX-License-Identifier: GPL-2.0
//
// Lockstep's wake-up watch: a thread of the run that wakes a thread of
// another process of the run, in a syscall of its own (a write to a pipe a
// reader waits on, a futex wake in shared memory, a socket send), is
// stopped (SIGSTOP) as that syscall returns, and lockstep's ptrace tracer
// holds it until the woken process waits again. So the woken process runs
// to its next wait before its waker goes on, and what the two then write
// to a shared pipe or file comes in that order, not in the host's. See
// docs/determinism.md, "Processes racing on a shared output".

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

// The PID namespace watched (the device and inode of its /proc/PID/ns/pid),
// set by user space when the command starts; until then nothing is. A
// process of it that the tracer does not trace (untraced: its host ID;
// lockstep exec's init) is not watched: a SIGSTOP would stop it for good.
struct target {
	__u64 dev;
	__u64 ino;
	__u32 untraced;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct target);
} target SEC(".maps");

// A thread of the run, by the address of its task_struct (what the
// sched_waking tracepoint names the woken thread by), learned at its
// first syscall and forgotten when the task is freed.
struct task {
	__u32 tgid;      // host process ID
	__u32 insys;     // in a syscall now
	__u64 nr;        // the syscall it is in (or was last in)
	__u64 waits;     // times it went to sleep in a call that waits for another party
	__u64 woke;      // the task it woke in this syscall (0: none)
	__u64 woke_waits; // that task's waits when it was woken
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, __u64);
	__type(value, struct task);
} tasks SEC(".maps");

// The calls that wait for another party (a read, a poll, a futex, a wait
// for a child...), by number: filled by user space from the list
// virt.Quiet uses.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u8);
} blocking SEC(".maps");

// A SIGSTOP sent for a wake-up: the task woken, its process, how many
// times it had waited then (it has reached its next wait once it has
// waited more) and how many threads its process had (one: that thread's
// wait says the process waits; the tracer need not look).
struct wake {
	__u64 task;
	__u64 waits;
	__u32 tgid;
	__u32 threads;
};

// The kernel's own structures, as far as the watch reads them: their
// fields' offsets are taken from the running kernel's BTF when the
// program is loaded (CO-RE).
struct signal_struct {
	int nr_threads;
} __attribute__((preserve_access_index));

struct task_struct {
	struct signal_struct *signal;
} __attribute__((preserve_access_index));

// The SIGSTOPs sent, by host thread ID. The tracer takes a SIGSTOP as a
// wake-up's only if it finds (and deletes) its entry here; any other
// SIGSTOP stops the thread as it would.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, struct wake);
} woken SEC(".maps");

// Counts of what the watch saw, for tests and the docs: [0] wake-ups
// across processes, [1] tasks it could not note (the map was full).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

static __always_inline void count(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&counts, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline int in_ns(void)
{
	__u32 k = 0;
	struct target *t = bpf_map_lookup_elem(&target, &k);
	struct bpf_pidns_info ns;
	if (!t || !t->ino)
		return 0;
	return bpf_get_ns_current_pid_tgid(t->dev, t->ino, &ns, sizeof(ns)) == 0;
}

SEC("raw_tracepoint/sys_enter")
int wake_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 self = bpf_get_current_task();
	struct task *t = bpf_map_lookup_elem(&tasks, &self);
	if (t) {
		t->insys = 1;
		t->nr = ctx->args[1];
		t->woke = 0;
		return 0;
	}
	if (!in_ns())
		return 0;
	struct task n = {.tgid = bpf_get_current_pid_tgid() >> 32, .insys = 1, .nr = ctx->args[1]};
	__u32 k = 0;
	struct target *tg = bpf_map_lookup_elem(&target, &k);
	if (tg && tg->untraced && tg->untraced == n.tgid)
		return 0;
	if (bpf_map_update_elem(&tasks, &self, &n, BPF_NOEXIST) != 0)
		count(1);
	return 0;
}

SEC("raw_tracepoint/sys_exit")
int wake_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 self = bpf_get_current_task();
	struct task *t = bpf_map_lookup_elem(&tasks, &self);
	if (!t)
		return 0;
	t->insys = 0;
	if (!t->woke)
		return 0;
	struct wake w = {.task = t->woke, .waits = t->woke_waits};
	t->woke = 0;
	struct task *o = bpf_map_lookup_elem(&tasks, &w.task);
	if (!o)
		return 0; // gone already
	w.tgid = o->tgid;
	struct task_struct *task = (struct task_struct *)w.task;
	w.threads = BPF_CORE_READ(task, signal, nr_threads);
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	if (bpf_map_update_elem(&woken, &tid, &w, BPF_ANY) != 0)
		return 0;
	if (bpf_send_signal_thread(19 /* SIGSTOP */) != 0)
		bpf_map_delete_elem(&woken, &tid);
	return 0;
}

// sched_waking fires in the waker's context (sched_wakeup may fire on the
// woken thread's CPU, under whatever runs there), and only for a thread
// that sleeps in a state the wake-up matches. A wake-up from an interrupt
// that came during a syscall of the run counts too: rare, and it only
// makes that syscall's thread wait for a process to be still.
SEC("raw_tracepoint/sched_waking")
int wake_waking(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 self = bpf_get_current_task();
	struct task *t = bpf_map_lookup_elem(&tasks, &self);
	if (!t || !t->insys)
		return 0;
	__u64 p = ctx->args[0];
	struct task *w = bpf_map_lookup_elem(&tasks, &p);
	if (!w || w->tgid == t->tgid)
		return 0;
	t->woke = p;
	t->woke_waits = w->waits;
	count(0);
	return 0;
}

// sched_switch counts a thread's waits: it leaves the CPU asleep
// (TASK_INTERRUPTIBLE, not preempted) in a call that waits for another
// party. Asleep elsewhere (a page fault, a lock in a path lookup, the
// agent's answer to a notified open) it is still at its own work.
SEC("raw_tracepoint/sched_switch")
int wake_switch(struct bpf_raw_tracepoint_args *ctx)
{
	if (ctx->args[0]) // preempted: still runnable
		return 0;
	__u64 prev = ctx->args[1];
	struct task *t = bpf_map_lookup_elem(&tasks, &prev);
	if (!t || !t->insys || !(ctx->args[3] & 1 /* TASK_INTERRUPTIBLE */))
		return 0;
	__u32 nr = (__u32)t->nr;
	__u8 *b = bpf_map_lookup_elem(&blocking, &nr);
	if (b && *b)
		t->waits++;
	return 0;
}

SEC("raw_tracepoint/sched_process_free")
int wake_free(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 p = ctx->args[0];
	bpf_map_delete_elem(&tasks, &p);
	return 0;
}
