package gotflite

import (
	"fmt"

	"github.com/starling-edge/starling/agent/runtime"
)

// gotflite defines no sentinel errors of its own: every error it returns
// wraps one of the runtime package's, so that callers handle all engines
// alike:
//
//   - runtime.ErrInvalidModel: the artifact is not a well-formed .tflite, or
//     is inconsistent (an offset outside the file, a tensor index out of
//     range, shapes an operator cannot accept, a tensor read before written).
//   - runtime.ErrUnsupported: the model is well formed but uses an operator,
//     type or feature gotflite does not implement; the message names it
//     (e.g. "unsupported op CONV_2D").
//   - runtime.ErrInput: Run's inputs do not match the signature.
//   - runtime.ErrClosed: Run after Close.
//
// The context's error is returned as is when Run is cancelled.

func invalidf(format string, args ...any) error {
	return fmt.Errorf("gotflite: "+format+": %w", append(args, runtime.ErrInvalidModel)...)
}

func unsupportedf(format string, args ...any) error {
	return fmt.Errorf("gotflite: "+format+": %w", append(args, runtime.ErrUnsupported)...)
}

func inputf(format string, args ...any) error {
	return fmt.Errorf("gotflite: "+format+": %w", append(args, runtime.ErrInput)...)
}

// opError is an error found while preparing one operator; Load turns it
// into an invalid-model or unsupported error that names the operator.
type opError struct {
	unsupported bool
	msg         string
}

func (e *opError) Error() string { return e.msg }

// bad reports an inconsistent operator (runtime.ErrInvalidModel).
func bad(format string, args ...any) error {
	return &opError{msg: fmt.Sprintf(format, args...)}
}

// unsupported reports a valid operator feature gotflite lacks
// (runtime.ErrUnsupported).
func unsupported(format string, args ...any) error {
	return &opError{unsupported: true, msg: fmt.Sprintf(format, args...)}
}
