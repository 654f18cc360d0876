package fleet

import "errors"

// Sentinel errors. Every Fleet method wraps at most one of them, so the API
// can map them to an answer with errors.Is.
var (
	// ErrOptions: Options are incomplete or malformed; the message names the field.
	ErrOptions = errors.New("fleet: invalid options")
	// ErrTokenUnknown: no enrollment or API token has this value.
	ErrTokenUnknown = errors.New("fleet: unknown token")
	// ErrTokenUsed: the enrollment token was redeemed before (a replay).
	ErrTokenUsed = errors.New("fleet: enrollment token already used")
	// ErrTokenExpired: the enrollment token's lifetime has passed.
	ErrTokenExpired = errors.New("fleet: enrollment token expired")
	// ErrCSR: the certificate signing request is malformed, badly signed,
	// uses an unsupported key, or names the wrong device.
	ErrCSR = errors.New("fleet: bad certificate request")
	// ErrInvalid: an argument is malformed (device id, role, name, ttl).
	ErrInvalid = errors.New("fleet: invalid argument")
	// ErrRevoked: the certificate, or its device, has been revoked.
	ErrRevoked = errors.New("fleet: certificate revoked")
	// ErrUntrusted: the certificate was not issued by this fleet's CA, is
	// expired, or is not a client certificate.
	ErrUntrusted = errors.New("fleet: certificate not trusted")
	// ErrNotFound: no such device or API token.
	ErrNotFound = errors.New("fleet: not found")
	// ErrConflict: an API token with this name exists already.
	ErrConflict = errors.New("fleet: conflict")
)
