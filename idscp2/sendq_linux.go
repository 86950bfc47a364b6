package idscp2

import (
	"net"
	"syscall"
	"unsafe"
)

// sendQueueEmpty reports whether the kernel holds no unacknowledged bytes
// for conn (SIOCOUTQ). A small write to such a socket cannot block, which is
// what lets the reader goroutine write ACKs itself instead of waking a
// flusher: it saves a goroutine switch per message on the latency path.
func sendQueueEmpty(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var queued int32
	var errno syscall.Errno
	if rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&queued)))
	}) != nil || errno != 0 {
		return false
	}
	return queued == 0
}
