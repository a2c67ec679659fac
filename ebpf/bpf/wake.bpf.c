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

char LICENSE[] SEC("license") = "GPL";

// The PID namespace watched (the device and inode of its /proc/PID/ns/pid),
// set by user space when the command starts; until then nothing is.
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

// A thread of the run, by the address of its task_struct (what the
// sched_waking tracepoint names the woken thread by), learned at its
// first syscall and forgotten when the task is freed.
struct task {
	__u32 tgid;  // host process ID
	__u32 insys; // in a syscall now
	__u32 woke;  // the host process ID it woke in this syscall (0: none)
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, __u64);
	__type(value, struct task);
} tasks SEC(".maps");

// The SIGSTOPs sent: host thread ID -> the host process ID it woke. The
// tracer takes a SIGSTOP as a wake-up's only if it finds (and deletes) its
// entry here; any other SIGSTOP stops the thread as it would.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, __u32);
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
		t->woke = 0;
		return 0;
	}
	if (!in_ns())
		return 0;
	struct task n = {.tgid = bpf_get_current_pid_tgid() >> 32, .insys = 1};
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
	__u32 woke = t->woke;
	if (!woke)
		return 0;
	t->woke = 0;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	if (bpf_map_update_elem(&woken, &tid, &woke, BPF_ANY) != 0)
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
	t->woke = w->tgid;
	count(0);
	return 0;
}

SEC("raw_tracepoint/sched_process_free")
int wake_free(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 p = ctx->args[0];
	bpf_map_delete_elem(&tasks, &p);
	return 0;
}
