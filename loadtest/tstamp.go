package main

import (
	"encoding/binary"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tsReader reads a TCP socket with recvmsg and keeps the kernel's receive
// timestamp (SO_TIMESTAMPNS) of the latest bytes read. On a two-core machine
// shared with the server, the time a reader goroutine gets to a frame says
// more about the load generator's scheduling than about the server; the
// kernel timestamp says when the frame reached the client's socket.
//
// It is used by one goroutine only.
type tsReader struct {
	rc  syscall.RawConn
	oob [128]byte
	// ts is the receive time (Unix ns) of the last bytes returned; 0 when
	// the kernel gave none.
	ts int64

	// state for recv, kept here so that a Read does not allocate a closure
	p    []byte
	n    int
	oobn int
	err  error
	recv func(fd uintptr) bool
}

func newTSReader(c net.Conn) (*tsReader, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, errNotTCP
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	t := &tsReader{rc: rc}
	t.recv = t.recvmsg
	return t, nil
}

type constError string

func (e constError) Error() string { return string(e) }

const errNotTCP = constError("not a TCP connection")

// enableTimestamps turns SO_TIMESTAMPNS on; call it from net.Dialer.Control.
func enableTimestamps(fd uintptr) error {
	return unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
}

func (t *tsReader) recvmsg(fd uintptr) bool {
	t.n, t.oobn, _, _, t.err = unix.Recvmsg(int(fd), t.p, t.oob[:], 0)
	return t.err != unix.EAGAIN
}

func (t *tsReader) Read(p []byte) (int, error) {
	t.p = p
	if err := t.rc.Read(t.recv); err != nil {
		return 0, err
	}
	t.p = nil
	switch {
	case t.err != nil:
		return 0, t.err
	case t.n == 0:
		return 0, io.EOF
	}
	t.ts = timestampNS(t.oob[:t.oobn])
	return t.n, nil
}

// timestampNS finds SCM_TIMESTAMPNS in control messages, without the
// allocations of unix.ParseSocketControlMessage.
func timestampNS(b []byte) int64 {
	const hdr = unix.SizeofCmsghdr
	for len(b) >= hdr {
		n := int(binary.NativeEndian.Uint64(b[0:8]))
		level := int32(binary.NativeEndian.Uint32(b[8:12]))
		typ := int32(binary.NativeEndian.Uint32(b[12:16]))
		if n < hdr || n > len(b) {
			return 0
		}
		if level == unix.SOL_SOCKET && typ == unix.SCM_TIMESTAMPNS && n >= hdr+16 {
			sec := int64(binary.NativeEndian.Uint64(b[hdr : hdr+8]))
			nsec := int64(binary.NativeEndian.Uint64(b[hdr+8 : hdr+16]))
			return sec*1e9 + nsec
		}
		b = b[min((n+7)&^7, len(b)):]
	}
	return 0
}
