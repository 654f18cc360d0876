// Package tensor defines the tensor value that crosses every Starling boundary:
// the engines, the local inference API and the wire. Data is kept as raw
// little-endian bytes so that the binary tensor extension and the engines can
// share buffers without conversion.
package tensor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// DType is a tensor element type, named as in the KServe Open Inference
// Protocol v2 ("FP32", "INT8", ...).
type DType string

// The element types Starling understands.
const (
	Bool   DType = "BOOL"
	Uint8  DType = "UINT8"
	Int8   DType = "INT8"
	Int16  DType = "INT16"
	Int32  DType = "INT32"
	Int64  DType = "INT64"
	Fp16   DType = "FP16"
	Fp32   DType = "FP32"
	Fp64   DType = "FP64"
	String DType = "BYTES"
)

// ErrShape is returned when a tensor's data does not match its shape and type.
var ErrShape = errors.New("tensor: data does not match shape")

// Size returns the byte width of one element, or 0 for variable-size types.
func (d DType) Size() int {
	switch d {
	case Bool, Uint8, Int8:
		return 1
	case Int16, Fp16:
		return 2
	case Int32, Fp32:
		return 4
	case Int64, Fp64:
		return 8
	}
	return 0
}

// Valid reports whether d is a known fixed-size element type.
func (d DType) Valid() bool { return d.Size() > 0 }

// Tensor is a named, typed, shaped value. Data holds the elements in row-major
// order, little-endian.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  []byte
}

// NumElements returns the product of shape, or -1 if any dimension is negative
// or the product overflows.
func NumElements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return -1
		}
		if d != 0 && n > math.MaxInt64/d {
			return -1
		}
		n *= d
	}
	return n
}

// Validate checks that Data has exactly the bytes Shape and DType call for.
func (t *Tensor) Validate() error {
	if !t.DType.Valid() {
		return fmt.Errorf("tensor %q: unsupported datatype %q", t.Name, t.DType)
	}
	n := NumElements(t.Shape)
	if n < 0 {
		return fmt.Errorf("tensor %q: invalid shape %v: %w", t.Name, t.Shape, ErrShape)
	}
	if want := n * int64(t.DType.Size()); int64(len(t.Data)) != want {
		return fmt.Errorf("tensor %q: shape %v of %s needs %d bytes, got %d: %w",
			t.Name, t.Shape, t.DType, want, len(t.Data), ErrShape)
	}
	return nil
}

// FromFloat32 builds an FP32 tensor.
func FromFloat32(name string, shape []int64, v []float32) Tensor {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return Tensor{Name: name, DType: Fp32, Shape: shape, Data: b}
}

// Float32s decodes an FP32 tensor's data into a new slice.
func (t *Tensor) Float32s() ([]float32, error) {
	if t.DType != Fp32 {
		return nil, fmt.Errorf("tensor %q: is %s, not FP32", t.Name, t.DType)
	}
	if len(t.Data)%4 != 0 {
		return nil, fmt.Errorf("tensor %q: %d bytes is not a whole number of FP32: %w", t.Name, len(t.Data), ErrShape)
	}
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out, nil
}
