package kernels

import "errors"

// ErrGeometry is returned (wrapped) by the plan constructors when the sizes,
// strides or weights they are given do not describe a valid operation.
var ErrGeometry = errors.New("kernels: invalid geometry")
