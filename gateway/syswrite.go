package gateway

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// writeNow writes iov (at most maxStackIOV buffers) to cn's socket with
// one writev made as a raw system call (a write for one buffer: writev's
// copy and check of the iovec array cost the fanout ~2% of its CPU per
// delivery, BenchmarkFanoutConns), when nothing waits in gnet's outbound
// buffer before it, and reports whether the socket took it all.
// What it did not take — a partial write, EAGAIN, an error — is left in
// iov for gnet's Writev, which buffers the rest or closes the connection
// on the error, as for its own writes.
//
// Why raw: a fanout is a run of short non-blocking writes, ~9 µs each on
// loopback. Through the Go scheduler's syscall path (unix.Writev) every
// one of them lets sysmon take the loop's P away and the loop's thread win
// one back on return. On two busy cores that hand-off cost the
// fanout ~20% of the writes' own CPU (BenchmarkFanoutConns, x-floor 1.18–
// 1.26 → 0.98–1.04 at 5,000 and 10,000 connections, load 10). A raw write
// keeps the P; the loop's goroutine is still preempted between writes like
// any other. Runs on the loop.
func (l *loop) writeNow(cn *conn, iov *[][]byte) bool {
	bufs := *iov
	if len(bufs) > len(l.vec) || cn.queued() > 0 {
		return false
	}
	total, k := 0, 0
	for _, b := range bufs {
		if len(b) > 0 {
			l.vec[k].Base = &b[0]
			l.vec[k].SetLen(len(b))
			total += len(b)
			k++
		}
	}
	if k == 0 {
		return true
	}
	var (
		n     uintptr
		errno unix.Errno
	)
	if k == 1 {
		// One buffer, the usual delivery.
		n, _, errno = unix.RawSyscall(unix.SYS_WRITE, uintptr(cn.fd), uintptr(unsafe.Pointer(l.vec[0].Base)), uintptr(l.vec[0].Len))
	} else {
		n, _, errno = unix.RawSyscall(unix.SYS_WRITEV, uintptr(cn.fd), uintptr(unsafe.Pointer(&l.vec[0])), uintptr(k))
	}
	clear(l.vec[:k]) // the frames are the ring's to let go of
	if errno != 0 {
		return false
	}
	if int(n) == total {
		return true
	}
	// Partial: drop what the socket took.
	for len(bufs) > 0 && int(n) >= len(bufs[0]) {
		n -= uintptr(len(bufs[0]))
		bufs = bufs[1:]
	}
	bufs[0] = bufs[0][n:]
	*iov = bufs
	return false
}
