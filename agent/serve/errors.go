package serve

import (
	"errors"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
)

// Sentinel errors. Every error the API answers with wraps one of them; it
// decides the HTTP status and the gRPC code (see statusOf).
var (
	// ErrOptions: a required option is missing or unusable.
	ErrOptions = errors.New("serve: invalid options")
	// ErrSocketInUse: another process is already serving on the socket.
	ErrSocketInUse = errors.New("serve: socket in use")
	// ErrBadRequest: the inference request does not fit the model; the
	// message says which input and what the model expects. 400 /
	// INVALID_ARGUMENT.
	ErrBadRequest = errors.New("bad request")
	// ErrNotFound: no such model, version or label is served. 404 /
	// NOT_FOUND.
	ErrNotFound = errors.New("not found")
	// ErrForbidden: the caller is not on the model's allow list. 403 /
	// PERMISSION_DENIED.
	ErrForbidden = errors.New("permission denied")
	// ErrQueueFull: the model's queue is at its bound; retry after the
	// hint (Retry-After). 429 / RESOURCE_EXHAUSTED.
	ErrQueueFull = errors.New("queue full")
	// ErrDeadline: the request's deadline passed before it could run; it
	// was dropped and never ran. 504 / DEADLINE_EXCEEDED.
	ErrDeadline = errors.New("deadline exceeded")
	// ErrUnavailable: the server or model is not ready, or is stopping.
	// 503 / UNAVAILABLE.
	ErrUnavailable = errors.New("unavailable")
	// ErrTooLarge: the request body is over Options.MaxBodyBytes. 413 /
	// RESOURCE_EXHAUSTED.
	ErrTooLarge = errors.New("request too large")
	// ErrInternal: the model failed to run. 500 / INTERNAL.
	ErrInternal = errors.New("internal error")
)

// retryError carries a Retry-After hint with ErrQueueFull.
type retryError struct {
	msg   string
	after time.Duration
}

func (e *retryError) Error() string { return e.msg }
func (e *retryError) Unwrap() error { return ErrQueueFull }

// statusOf maps an error to its HTTP status and gRPC code.
func statusOf(err error) (int, codes.Code) {
	switch {
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest, codes.InvalidArgument
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, codes.NotFound
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, codes.PermissionDenied
	case errors.Is(err, ErrQueueFull):
		return http.StatusTooManyRequests, codes.ResourceExhausted
	case errors.Is(err, ErrDeadline):
		return http.StatusGatewayTimeout, codes.DeadlineExceeded
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable, codes.Unavailable
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, codes.ResourceExhausted
	}
	return http.StatusInternalServerError, codes.Internal
}

// reasonOf is the failure label of the failures metric.
func reasonOf(err error) string {
	switch {
	case errors.Is(err, ErrBadRequest):
		return "bad_request"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrForbidden):
		return "forbidden"
	case errors.Is(err, ErrQueueFull):
		return "queue_full"
	case errors.Is(err, ErrDeadline):
		return "deadline"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	}
	return "internal"
}
