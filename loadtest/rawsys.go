package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The poller's system calls never block (epoll_wait with a zero time-out,
// recvmsg on a non-blocking socket), so it makes them raw: through the
// scheduler's syscall path each one lets sysmon look at the poller's P, and
// sysmon then wakes every 20 µs for as long as they keep coming (7% of the
// load generator's CPU in runtime.usleep, perf, 12-city shape). Raw, its
// CPU per delivery in that shape fell from 12.2 / 14.5 / 12.8 µs to
// 9.9 / 9.9 / 11.0 (alternated runs against one node). The node's loops
// write the same way (gateway/syswrite.go).

// epollPoll is epoll_wait(epfd, events, 0).
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// recvmsg reads into buf, and the control messages into oob, from the
// non-blocking socket fd.
func recvmsg(fd int, buf, oob []byte) (n, oobn int, err error) {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	msg := unix.Msghdr{Iov: &iov, Iovlen: 1, Control: &oob[0]}
	msg.SetControllen(len(oob))
	r, _, errno := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&msg)), 0)
	if errno != 0 {
		return 0, 0, errno
	}
	return int(r), int(msg.Controllen), nil
}
