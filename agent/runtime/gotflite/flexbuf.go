package gotflite

import (
	"encoding/binary"
	"fmt"
	"math"
)

// A small, read-only FlexBuffers reader for custom operators' options
// (flatbuffers' schemaless format, which TFLite custom ops use for their
// attributes). It reads scalars and map lookups only, checks every offset
// against the buffer before it reads, and never panics: anything it cannot
// follow is an error.
//
// Layout, in brief: the buffer ends with the root's value, its packed type
// byte and the root's byte width. A packed type is type<<2 | log2(width).
// Scalars of the parent's width are stored inline; strings, keys, vectors
// and maps are stored as unsigned offsets back from where the offset is
// read. A map's values are a vector of its byte width, followed by one
// packed type byte per value and preceded by its length, the byte width of
// its keys vector and the offset of that keys vector; keys are offsets to
// NUL-terminated strings.

// FlexBuffers value types (flexbuffers.h Type).
const (
	fxNull          = 0
	fxInt           = 1
	fxUint          = 2
	fxFloat         = 3
	fxKey           = 4
	fxString        = 5
	fxIndirectInt   = 6
	fxIndirectUint  = 7
	fxIndirectFloat = 8
	fxMap           = 9
	fxVectorKey     = 14
	fxBool          = 26
)

// maxFlexMapLen bounds the entries a map lookup scans.
const maxFlexMapLen = 1 << 16

// flexRef is one value: where it is stored, the width it is stored with
// (its parent's) and its own type and width.
type flexRef struct {
	buf         []byte
	pos         int // offset of the stored value
	parentWidth int // width of the stored value
	typ         int
	width       int // the type's own width (of indirect data)
}

// flexNull is the value of a missing key.
var flexNull = flexRef{typ: fxNull}

// readUint reads a little-endian unsigned integer of width 1, 2, 4 or 8.
func flexUint(b []byte, pos, width int) (uint64, error) {
	if pos < 0 || width <= 0 || pos > len(b)-width {
		return 0, fmt.Errorf("flexbuffer: %d-byte value at %d is outside the %d-byte buffer", width, pos, len(b))
	}
	switch width {
	case 1:
		return uint64(b[pos]), nil
	case 2:
		return uint64(binary.LittleEndian.Uint16(b[pos:])), nil
	case 4:
		return uint64(binary.LittleEndian.Uint32(b[pos:])), nil
	case 8:
		return binary.LittleEndian.Uint64(b[pos:]), nil
	}
	return 0, fmt.Errorf("flexbuffer: byte width %d", width)
}

func flexInt(b []byte, pos, width int) (int64, error) {
	u, err := flexUint(b, pos, width)
	if err != nil {
		return 0, err
	}
	switch width {
	case 1:
		return int64(int8(u)), nil
	case 2:
		return int64(int16(u)), nil
	case 4:
		return int64(int32(u)), nil
	}
	return int64(u), nil
}

// flexFloat reads a float of width 4 or 8; narrower "floats" are read as
// signed integers, as flexbuffers.h's ReadDouble does.
func flexFloat(b []byte, pos, width int) (float64, error) {
	u, err := flexUint(b, pos, width)
	if err != nil {
		return 0, err
	}
	switch width {
	case 4:
		return float64(math.Float32frombits(uint32(u))), nil
	case 8:
		return math.Float64frombits(u), nil
	}
	v, _ := flexInt(b, pos, width)
	return float64(v), nil
}

// indirect follows the offset stored at pos (of width) back to its target.
func flexIndirect(b []byte, pos, width int) (int, error) {
	off, err := flexUint(b, pos, width)
	if err != nil {
		return 0, err
	}
	if off > uint64(pos) {
		return 0, fmt.Errorf("flexbuffer: offset %d at %d points before the buffer", off, pos)
	}
	return pos - int(off), nil
}

// unpackType splits a packed type byte.
func unpackType(packed byte) (typ, width int) {
	return int(packed >> 2), 1 << (packed & 3)
}

// flexRoot returns the root value of a FlexBuffer.
func flexRoot(b []byte) (flexRef, error) {
	if len(b) < 3 {
		return flexRef{}, fmt.Errorf("flexbuffer: %d bytes is too short", len(b))
	}
	width := int(b[len(b)-1])
	if width != 1 && width != 2 && width != 4 && width != 8 {
		return flexRef{}, fmt.Errorf("flexbuffer: root byte width %d", width)
	}
	pos := len(b) - 2 - width
	if pos < 0 {
		return flexRef{}, fmt.Errorf("flexbuffer: %d bytes is too short for a %d-byte root", len(b), width)
	}
	typ, w := unpackType(b[len(b)-2])
	return flexRef{buf: b, pos: pos, parentWidth: width, typ: typ, width: w}, nil
}

// isNull reports whether r is null (a missing key included).
func (r flexRef) isNull() bool { return r.typ == fxNull }

// asInt64 reads a numeric or boolean value as an integer (null is 0).
func (r flexRef) asInt64() (int64, error) {
	switch r.typ {
	case fxNull:
		return 0, nil
	case fxInt:
		return flexInt(r.buf, r.pos, r.parentWidth)
	case fxUint, fxBool:
		u, err := flexUint(r.buf, r.pos, r.parentWidth)
		return int64(u), err
	case fxFloat:
		f, err := flexFloat(r.buf, r.pos, r.parentWidth)
		return floatToInt64(f), err
	case fxIndirectInt, fxIndirectUint, fxIndirectFloat:
		p, err := flexIndirect(r.buf, r.pos, r.parentWidth)
		if err != nil {
			return 0, err
		}
		switch r.typ {
		case fxIndirectInt:
			return flexInt(r.buf, p, r.width)
		case fxIndirectUint:
			u, err := flexUint(r.buf, p, r.width)
			return int64(u), err
		}
		f, err := flexFloat(r.buf, p, r.width)
		return floatToInt64(f), err
	}
	return 0, fmt.Errorf("flexbuffer: value of type %d is not a number", r.typ)
}

// floatToInt64 truncates toward zero, saturating (NaN is 0).
func floatToInt64(f float64) int64 {
	switch {
	case f != f:
		return 0
	case f >= math.MaxInt64:
		return math.MaxInt64
	case f <= math.MinInt64:
		return math.MinInt64
	}
	return int64(f)
}

// asInt32 reads an integer and checks that it fits in an int32.
func (r flexRef) asInt32() (int32, error) {
	v, err := r.asInt64()
	if err != nil {
		return 0, err
	}
	if v < math.MinInt32 || v > math.MaxInt32 {
		return 0, fmt.Errorf("flexbuffer: %d does not fit in 32 bits", v)
	}
	return int32(v), nil
}

// asFloat reads a numeric value as a float32 (null is 0).
func (r flexRef) asFloat() (float32, error) {
	switch r.typ {
	case fxFloat:
		f, err := flexFloat(r.buf, r.pos, r.parentWidth)
		return float32(f), err
	case fxIndirectFloat:
		p, err := flexIndirect(r.buf, r.pos, r.parentWidth)
		if err != nil {
			return 0, err
		}
		f, err := flexFloat(r.buf, p, r.width)
		return float32(f), err
	case fxUint, fxIndirectUint, fxBool:
		v, err := r.asInt64()
		return float32(uint64(v)), err
	}
	v, err := r.asInt64()
	return float32(v), err
}

// asBool reads a boolean or a number (non-zero is true).
func (r flexRef) asBool() (bool, error) {
	if r.typ == fxFloat || r.typ == fxIndirectFloat {
		f, err := r.asFloat()
		return f != 0, err
	}
	v, err := r.asInt64()
	return v != 0, err
}

// lookup returns the value of key in map r, or flexNull when the map has
// no such key.
func (r flexRef) lookup(key string) (flexRef, error) {
	if r.typ != fxMap {
		return flexRef{}, fmt.Errorf("flexbuffer: value of type %d is not a map", r.typ)
	}
	data, err := flexIndirect(r.buf, r.pos, r.parentWidth)
	if err != nil {
		return flexRef{}, err
	}
	w := r.width
	n, err := flexUint(r.buf, data-w, w)
	if err != nil {
		return flexRef{}, fmt.Errorf("flexbuffer: map length: %w", err)
	}
	if n > maxFlexMapLen || n > uint64(len(r.buf)) {
		return flexRef{}, fmt.Errorf("flexbuffer: map of %d entries in a %d-byte buffer", n, len(r.buf))
	}
	count := int(n)
	// The values and their type bytes must lie inside the buffer.
	if data+count*w+count > len(r.buf) {
		return flexRef{}, fmt.Errorf("flexbuffer: map of %d entries at %d runs past the %d-byte buffer", count, data, len(r.buf))
	}
	keys, err := flexIndirect(r.buf, data-3*w, w)
	if err != nil {
		return flexRef{}, fmt.Errorf("flexbuffer: map keys: %w", err)
	}
	kw64, err := flexUint(r.buf, data-2*w, w)
	if err != nil {
		return flexRef{}, fmt.Errorf("flexbuffer: map keys width: %w", err)
	}
	kw := int(kw64)
	if kw != 1 && kw != 2 && kw != 4 && kw != 8 {
		return flexRef{}, fmt.Errorf("flexbuffer: map keys width %d", kw64)
	}
	for i := 0; i < count; i++ {
		kp, err := flexIndirect(r.buf, keys+i*kw, kw)
		if err != nil {
			return flexRef{}, fmt.Errorf("flexbuffer: map key %d: %w", i, err)
		}
		if !flexKeyIs(r.buf, kp, key) {
			continue
		}
		typ, tw := unpackType(r.buf[data+count*w+i])
		return flexRef{buf: r.buf, pos: data + i*w, parentWidth: w, typ: typ, width: tw}, nil
	}
	return flexNull, nil
}

// flexKeyIs reports whether the NUL-terminated string at pos is key.
func flexKeyIs(b []byte, pos int, key string) bool {
	if pos < 0 || pos+len(key) >= len(b) {
		return false
	}
	return string(b[pos:pos+len(key)]) == key && b[pos+len(key)] == 0
}
