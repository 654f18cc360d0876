package serve

import (
	"context"
	"fmt"
	"net"
	"slices"
)

// Caller is who sent a request, as the kernel vouches for it on the unix
// socket (SO_PEERCRED). Over TCP Known is false.
type Caller struct {
	Known    bool
	UID, GID uint32
	PID      int32
}

func (c Caller) String() string {
	if !c.Known {
		return "an unidentified caller (TCP)"
	}
	return fmt.Sprintf("uid %d gid %d (pid %d)", c.UID, c.GID, c.PID)
}

// checkAllowed applies a model's allow list.
func checkAllowed(model string, a Allow, c Caller) error {
	if a.Empty() {
		return nil
	}
	if c.Known && (slices.Contains(a.UIDs, c.UID) || slices.Contains(a.GIDs, c.GID)) {
		return nil
	}
	return fmt.Errorf("model %q: %s is not on its allow list (ask the device operator to add the uid or gid to serving.models.%s.allow): %w",
		model, c, model, ErrForbidden)
}

// peerAddr is the remote address of a unix socket connection, carrying
// the caller's credentials read when the connection was accepted.
type peerAddr struct {
	net.Addr
	caller Caller
}

// credConn is a unix connection whose RemoteAddr carries its caller.
type credConn struct {
	net.Conn
	addr peerAddr
}

func (c *credConn) RemoteAddr() net.Addr { return c.addr }

// credListener identifies each accepted unix connection's caller once,
// at accept, so requests pay nothing for it.
type credListener struct{ net.Listener }

func (l credListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	caller, _ := peerCred(c) // a caller the kernel cannot name stays unknown
	return &credConn{Conn: c, addr: peerAddr{Addr: c.RemoteAddr(), caller: caller}}, nil
}

// callerOf returns the caller behind a connection's remote address.
func callerOf(a net.Addr) Caller {
	if p, ok := a.(peerAddr); ok {
		return p.caller
	}
	return Caller{}
}

type callerKey struct{}

// connContext stores the connection's caller in a request's context.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, callerKey{}, callerOf(c.RemoteAddr()))
}

func callerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}
