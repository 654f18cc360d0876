package serve

import "errors"

// Sentinel errors.
var (
	// ErrOptions: a required option is missing or unusable.
	ErrOptions = errors.New("serve: invalid options")
	// ErrSocketInUse: another process is already serving on the socket.
	ErrSocketInUse = errors.New("serve: socket in use")
	// ErrBadRequest: the inference request does not fit the model; the
	// message says which input and what the model expects.
	ErrBadRequest = errors.New("bad request")
)
