package link

import "errors"

// Sentinel errors.
var (
	// ErrOptions: Options are incomplete or malformed; the message names the field.
	ErrOptions = errors.New("link: invalid options")
	// ErrConnect: the broker could not be reached or refused the session.
	ErrConnect = errors.New("link: cannot connect to broker")
	// ErrPublish: the broker did not acknowledge a publish in time. For a
	// desired state the state is stored and is published again on reconnect.
	ErrPublish = errors.New("link: publish not acknowledged")
	// ErrClosed: the link was used after Close.
	ErrClosed = errors.New("link: closed")
)
