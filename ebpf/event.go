package ebpf

import (
	"encoding/binary"
	"fmt"
)

// Event types, as trace.bpf.c emits them.
const (
	EvWrite = 1 // bytes written
	EvRead  = 2 // bytes read
	EvCount = 3 // bytes moved but not copied (sendfile, splice, ..., or beyond the copy limit)
)

// Event is one record of the ring buffer.
type Event struct {
	Type    uint32
	Nr      uint32 // syscall number
	Pid     uint32 // process, in the traced PID namespace
	Tid     uint32 // thread, in the traced PID namespace
	HostPid uint32
	FD      int32
	Seq     uint64 // the thread's syscall counter
	Offset  uint64 // of Data within the syscall's bytes
	Len     uint32
	Data    []byte // EvWrite, EvRead
}

const eventHeader = 48 // bytes before data in struct event

// ParseEvent decodes a ring buffer record.
func ParseEvent(b []byte) (Event, error) {
	if len(b) < eventHeader {
		return Event{}, fmt.Errorf("event of %d bytes", len(b))
	}
	le := binary.LittleEndian
	e := Event{
		Type: le.Uint32(b[0:]), Nr: le.Uint32(b[4:]), Pid: le.Uint32(b[8:]), Tid: le.Uint32(b[12:]),
		HostPid: le.Uint32(b[16:]), FD: int32(le.Uint32(b[20:])), Seq: le.Uint64(b[24:]),
		Offset: le.Uint64(b[32:]), Len: le.Uint32(b[40:]),
	}
	if e.Type == EvWrite || e.Type == EvRead || e.Type == EvAudit {
		if int(e.Len) > len(b)-eventHeader {
			return Event{}, fmt.Errorf("event says %d bytes of data, has %d", e.Len, len(b)-eventHeader)
		}
		e.Data = b[eventHeader : eventHeader+int(e.Len)]
	}
	return e, nil
}

// SyscallName names the syscalls the tracer reports.
func SyscallName(nr uint32) string {
	if n, ok := syscallNames[nr]; ok {
		return n
	}
	return fmt.Sprintf("syscall %d", nr)
}

var syscallNames = map[uint32]string{
	2: "open", 257: "openat", 437: "openat2", 228: "clock_gettime", 96: "gettimeofday", 201: "time",
	229: "clock_getres", 318: "getrandom", 204: "sched_getaffinity", 63: "uname", 99: "sysinfo",
	309: "getcpu", 36: "getitimer", 37: "alarm", 38: "setitimer", 222: "timer_create", 223: "timer_settime", 224: "timer_gettime", 287: "timerfd_gettime",
	0: "read", 1: "write", 17: "pread64", 18: "pwrite64", 19: "readv", 20: "writev",
	40: "sendfile", 44: "sendto", 45: "recvfrom", 46: "sendmsg", 47: "recvmsg",
	275: "splice", 276: "tee", 278: "vmsplice", 295: "preadv", 296: "pwritev",
	326: "copy_file_range", 327: "preadv2", 328: "pwritev2",
}
