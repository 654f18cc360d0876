package serve

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerCred asks the kernel who is at the other end of a unix socket
// (SO_PEERCRED: the uid, gid and pid at connect time).
func peerCred(c net.Conn) (Caller, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return Caller{}, fmt.Errorf("peer credentials: %T is not a socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return Caller{}, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Caller{}, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return Caller{}, fmt.Errorf("peer credentials: SO_PEERCRED: %w", cerr)
	}
	return Caller{Known: true, UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}, nil
}
