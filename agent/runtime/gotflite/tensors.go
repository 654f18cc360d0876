package gotflite

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/starling-edge/starling/shared/tensor"
)

// ttype is a TFLite TensorType.
type ttype int8

// The TFLite tensor types (schema.fbs TensorType).
const (
	tFloat32 ttype = 0
	tFloat16 ttype = 1
	tInt32   ttype = 2
	tUint8   ttype = 3
	tInt64   ttype = 4
	tString  ttype = 5
	tBool    ttype = 6
	tInt16   ttype = 7
	tInt8    ttype = 9
	tFloat64 ttype = 10
)

var ttypeNames = [...]string{
	"FLOAT32", "FLOAT16", "INT32", "UINT8", "INT64", "STRING", "BOOL", "INT16",
	"COMPLEX64", "INT8", "FLOAT64", "COMPLEX128", "UINT64", "RESOURCE", "VARIANT",
	"UINT32", "UINT16", "INT4", "BFLOAT16",
}

func (t ttype) String() string {
	if t >= 0 && int(t) < len(ttypeNames) {
		return ttypeNames[t]
	}
	return fmt.Sprintf("type %d", int8(t))
}

// stored reports whether tensors of this type can live in an arena, and
// the byte width of one element.
func (t ttype) size() (int, bool) {
	switch t {
	case tFloat32, tInt32:
		return 4, true
	case tUint8, tInt8, tBool:
		return 1, true
	case tInt16:
		return 2, true
	case tInt64:
		return 8, true
	}
	return 0, false
}

// oip maps a stored type to its Open Inference Protocol name.
func (t ttype) oip() tensor.DType {
	switch t {
	case tFloat32:
		return tensor.Fp32
	case tInt32:
		return tensor.Int32
	case tUint8:
		return tensor.Uint8
	case tInt8:
		return tensor.Int8
	case tBool:
		return tensor.Bool
	case tInt16:
		return tensor.Int16
	case tInt64:
		return tensor.Int64
	case tFloat16:
		return tensor.Fp16
	case tFloat64:
		return tensor.Fp64
	case tString:
		return tensor.String
	}
	return tensor.DType(t.String())
}

// views holds, for each tensor index, the typed slice of its data in one
// executor: a constant's shared read-only data or the tensor's window of the
// executor's arena. Exactly one of the per-type entries is set for a tensor
// that an operator uses.
type views struct {
	f32 [][]float32
	i32 [][]int32
	u8  [][]uint8
	i8  [][]int8
	i16 [][]int16
	i64 [][]int64
	b   [][]bool
}

// arenas is one executor's memory: one slice per element type.
type arenas struct {
	f32 []float32
	i32 []int32
	u8  []uint8
	i8  []int8
	i16 []int16
	i64 []int64
	b   []bool
}

// arenaSizes is the planned length, in elements, of each arena.
type arenaSizes [7]int

func arenaSlot(t ttype) int {
	switch t {
	case tFloat32:
		return 0
	case tInt32:
		return 1
	case tUint8:
		return 2
	case tInt8:
		return 3
	case tInt16:
		return 4
	case tInt64:
		return 5
	case tBool:
		return 6
	}
	return -1
}

// tensorKind says where a tensor's data lives.
type tensorKind uint8

const (
	kindUnused tensorKind = iota // no operator or signature uses it
	kindConst                    // model data, shared by all executors
	kindArena                    // a window of each executor's arena
)

// tinfo is one tensor of the executed subgraph.
type tinfo struct {
	index int
	name  string
	typ   ttype
	shape []int   // static shape
	sig   []int64 // signature shape, -1 for a dynamic dimension
	n     int     // number of elements
	kind  tensorKind
	off   int   // arena offset in elements (kindArena)
	c     views // the constant's data, in entry 0 of its type (kindConst)

	first, last int // lifetime in operator indices (kindArena)
	buffer      uint32
	fb          *fbTensor
}

func (t *tinfo) String() string { return fmt.Sprintf("tensor %d %q", t.index, t.name) }

// dims returns the shape as int64s, for a runtime.TensorSpec.
func shape64(s []int) []int64 {
	out := make([]int64, len(s))
	for i, d := range s {
		out[i] = int64(d)
	}
	return out
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// decodeConst decodes a constant buffer of n elements of type t into typed
// data (little-endian). The caller checked the length.
func decodeConst(t ttype, data []byte, n int) views {
	var v views
	switch t {
	case tFloat32:
		s := make([]float32, n)
		for i := range s {
			s[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		}
		v.f32 = [][]float32{s}
	case tInt32:
		s := make([]int32, n)
		for i := range s {
			s[i] = int32(binary.LittleEndian.Uint32(data[4*i:]))
		}
		v.i32 = [][]int32{s}
	case tUint8:
		s := make([]uint8, n)
		copy(s, data)
		v.u8 = [][]uint8{s}
	case tInt8:
		s := make([]int8, n)
		for i := range s {
			s[i] = int8(data[i])
		}
		v.i8 = [][]int8{s}
	case tInt16:
		s := make([]int16, n)
		for i := range s {
			s[i] = int16(binary.LittleEndian.Uint16(data[2*i:]))
		}
		v.i16 = [][]int16{s}
	case tInt64:
		s := make([]int64, n)
		for i := range s {
			s[i] = int64(binary.LittleEndian.Uint64(data[8*i:]))
		}
		v.i64 = [][]int64{s}
	case tBool:
		s := make([]bool, n)
		for i := range s {
			s[i] = data[i] != 0
		}
		v.b = [][]bool{s}
	}
	return v
}

// setView points views entry idx at the data of t for one executor.
func (v *views) set(idx int, t *tinfo, a *arenas) {
	switch t.typ {
	case tFloat32:
		v.f32[idx] = viewOf(t, t.c.f32, a.f32)
	case tInt32:
		v.i32[idx] = viewOf(t, t.c.i32, a.i32)
	case tUint8:
		v.u8[idx] = viewOf(t, t.c.u8, a.u8)
	case tInt8:
		v.i8[idx] = viewOf(t, t.c.i8, a.i8)
	case tInt16:
		v.i16[idx] = viewOf(t, t.c.i16, a.i16)
	case tInt64:
		v.i64[idx] = viewOf(t, t.c.i64, a.i64)
	case tBool:
		v.b[idx] = viewOf(t, t.c.b, a.b)
	}
}

// viewOf is a tensor's data: its constant, or its slice of the arena.
func viewOf[E any](t *tinfo, consts [][]E, arena []E) []E {
	if t.kind == kindConst {
		return consts[0]
	}
	lo, hi := t.off, t.off+t.n
	return arena[lo:hi:hi]
}

// putBytes encodes tensor data from its view as little-endian bytes.
func (v *views) putBytes(idx int, t *tinfo, dst []byte) {
	switch t.typ {
	case tFloat32:
		for i, x := range v.f32[idx] {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(x))
		}
	case tInt32:
		for i, x := range v.i32[idx] {
			binary.LittleEndian.PutUint32(dst[4*i:], uint32(x))
		}
	case tUint8:
		copy(dst, v.u8[idx])
	case tInt8:
		for i, x := range v.i8[idx] {
			dst[i] = byte(x)
		}
	case tInt16:
		for i, x := range v.i16[idx] {
			binary.LittleEndian.PutUint16(dst[2*i:], uint16(x))
		}
	case tInt64:
		for i, x := range v.i64[idx] {
			binary.LittleEndian.PutUint64(dst[8*i:], uint64(x))
		}
	case tBool:
		for i, x := range v.b[idx] {
			dst[i] = 0
			if x {
				dst[i] = 1
			}
		}
	}
}

// getBytes decodes little-endian bytes into tensor data in its view.
func (v *views) getBytes(idx int, t *tinfo, src []byte) {
	switch t.typ {
	case tFloat32:
		s := v.f32[idx]
		for i := range s {
			s[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case tInt32:
		s := v.i32[idx]
		for i := range s {
			s[i] = int32(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case tUint8:
		copy(v.u8[idx], src)
	case tInt8:
		s := v.i8[idx]
		for i := range s {
			s[i] = int8(src[i])
		}
	case tInt16:
		s := v.i16[idx]
		for i := range s {
			s[i] = int16(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case tInt64:
		s := v.i64[idx]
		for i := range s {
			s[i] = int64(binary.LittleEndian.Uint64(src[8*i:]))
		}
	case tBool:
		s := v.b[idx]
		for i := range s {
			s[i] = src[i] != 0
		}
	}
}
