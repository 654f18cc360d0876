package enroll

import "errors"

// Sentinel errors. Errors from this package wrap at most one of them.
var (
	// ErrOptions: a required option is missing or malformed.
	ErrOptions = errors.New("enroll: invalid options")
	// ErrNotEnrolled: the data directory holds no device certificate and
	// no enrollment token was given.
	ErrNotEnrolled = errors.New("enroll: device not enrolled")
	// ErrIdentity: the stored key, certificate or CA is unreadable,
	// mismatched or expired.
	ErrIdentity = errors.New("enroll: stored device identity unusable")
	// ErrPin: the control plane's certificate chain does not lead to the
	// pinned fleet CA (wrong --ca-file or --ca-fingerprint, or someone in
	// the middle). The token was not sent.
	ErrPin = errors.New("enroll: control plane does not present the pinned fleet CA")
	// ErrTokenUsed: the enrollment token was redeemed before (a replay).
	ErrTokenUsed = errors.New("enroll: enrollment token already used")
	// ErrTokenExpired: the enrollment token's lifetime has passed.
	ErrTokenExpired = errors.New("enroll: enrollment token expired")
	// ErrTokenUnknown: the control plane never issued this token.
	ErrTokenUnknown = errors.New("enroll: enrollment token unknown")
	// ErrRefused: the control plane refused the request for another
	// reason (the device id, the request) or answered with something
	// that is not a certificate for this device's key.
	ErrRefused = errors.New("enroll: enrollment refused")
)
