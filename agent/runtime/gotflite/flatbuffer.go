package gotflite

import (
	"encoding/binary"
	"fmt"
	"math"
)

// This file is a minimal, bounds-checked reader for the FlatBuffers binary
// format, just enough to walk a .tflite file. A .tflite arrives from the
// network, so every offset, vtable and vector length is checked against the
// buffer before it is used; nothing here can panic or allocate more than the
// input's size, and no pointer chain can loop (table and vector offsets are
// unsigned and the schema is walked to a fixed depth).
//
// Layout reminder: a table starts with an int32 soffset to its vtable
// (vtable = table - soffset). A vtable is uint16 vtable size, uint16 inline
// table size, then one uint16 offset per field slot (0 = absent). Reference
// fields (tables, vectors, strings) hold a uint32 offset relative to the
// field's own position. A vector is a uint32 element count followed by the
// elements.

// fbuf is a flatbuffer held in memory.
type fbuf []byte

// fbTable is a validated table: its position and vtable are in bounds.
type fbTable struct {
	b     fbuf
	pos   uint64 // start of the table (its soffset)
	vt    uint64 // start of its vtable
	vtLen uint64 // vtable length in bytes
	end   uint64 // end of the table's inline data
}

// fbVector is a validated vector: all n elements of size elem are in bounds.
type fbVector struct {
	b     fbuf
	start uint64 // first element
	n     int
	elem  uint64
}

func (b fbuf) has(pos, size uint64) bool {
	return pos <= uint64(len(b)) && size <= uint64(len(b))-pos
}

func (b fbuf) u16(pos uint64) uint16 { return binary.LittleEndian.Uint16(b[pos:]) }
func (b fbuf) u32(pos uint64) uint32 { return binary.LittleEndian.Uint32(b[pos:]) }
func (b fbuf) u64(pos uint64) uint64 { return binary.LittleEndian.Uint64(b[pos:]) }

// root returns the root table of the buffer.
func (b fbuf) root() (fbTable, error) {
	if len(b) < 8 {
		return fbTable{}, fmt.Errorf("file is %d bytes, too short for a flatbuffer", len(b))
	}
	return b.table(uint64(b.u32(0)))
}

// table validates the table at pos.
func (b fbuf) table(pos uint64) (fbTable, error) {
	if pos%4 != 0 || !b.has(pos, 4) {
		return fbTable{}, fmt.Errorf("table offset %d is outside the file (%d bytes) or misaligned", pos, len(b))
	}
	vt := int64(pos) - int64(int32(b.u32(pos)))
	if vt < 0 || !b.has(uint64(vt), 4) || vt%2 != 0 {
		return fbTable{}, fmt.Errorf("table at %d: vtable offset %d is outside the file", pos, vt)
	}
	vtLen := uint64(b.u16(uint64(vt)))
	size := uint64(b.u16(uint64(vt) + 2))
	if vtLen < 4 || vtLen%2 != 0 || !b.has(uint64(vt), vtLen) {
		return fbTable{}, fmt.Errorf("table at %d: vtable at %d has bad length %d", pos, vt, vtLen)
	}
	if size < 4 || !b.has(pos, size) {
		return fbTable{}, fmt.Errorf("table at %d: inline size %d runs past the end of the file", pos, size)
	}
	return fbTable{b: b, pos: pos, vt: uint64(vt), vtLen: vtLen, end: pos + size}, nil
}

// field returns the position of field slot (0-based) holding size bytes, or
// ok=false when the field is absent.
func (t fbTable) field(slot int, size uint64) (pos uint64, ok bool, err error) {
	e := 4 + 2*uint64(slot)
	if e+2 > t.vtLen {
		return 0, false, nil
	}
	off := uint64(t.b.u16(t.vt + e))
	if off == 0 {
		return 0, false, nil
	}
	pos = t.pos + off
	if off < 4 || pos+size > t.end {
		return 0, false, fmt.Errorf("table at %d: field %d at offset %d runs past the table", t.pos, slot, off)
	}
	return pos, true, nil
}

func (t fbTable) uint8Field(slot int, def uint8) (uint8, error) {
	pos, ok, err := t.field(slot, 1)
	if err != nil || !ok {
		return def, err
	}
	return t.b[pos], nil
}

func (t fbTable) int8Field(slot int, def int8) (int8, error) {
	v, err := t.uint8Field(slot, uint8(def))
	return int8(v), err
}

func (t fbTable) boolField(slot int, def bool) (bool, error) {
	d := uint8(0)
	if def {
		d = 1
	}
	v, err := t.uint8Field(slot, d)
	return v != 0, err
}

func (t fbTable) uint32Field(slot int, def uint32) (uint32, error) {
	pos, ok, err := t.field(slot, 4)
	if err != nil || !ok {
		return def, err
	}
	return t.b.u32(pos), nil
}

func (t fbTable) int32Field(slot int, def int32) (int32, error) {
	v, err := t.uint32Field(slot, uint32(def))
	return int32(v), err
}

func (t fbTable) float32Field(slot int, def float32) (float32, error) {
	v, err := t.uint32Field(slot, math.Float32bits(def))
	return math.Float32frombits(v), err
}

func (t fbTable) uint64Field(slot int, def uint64) (uint64, error) {
	pos, ok, err := t.field(slot, 8)
	if err != nil || !ok {
		return def, err
	}
	return t.b.u64(pos), nil
}

// ref follows the uoffset in a reference field.
func (t fbTable) ref(slot int) (target uint64, ok bool, err error) {
	pos, ok, err := t.field(slot, 4)
	if err != nil || !ok {
		return 0, false, err
	}
	target = pos + uint64(t.b.u32(pos))
	if !t.b.has(target, 4) {
		return 0, false, fmt.Errorf("table at %d: field %d points to %d, outside the file (%d bytes)", t.pos, slot, target, len(t.b))
	}
	return target, true, nil
}

// subtable returns the table in field slot, or ok=false when absent.
func (t fbTable) subtable(slot int) (fbTable, bool, error) {
	target, ok, err := t.ref(slot)
	if err != nil || !ok {
		return fbTable{}, false, err
	}
	st, err := t.b.table(target)
	if err != nil {
		return fbTable{}, false, err
	}
	return st, true, nil
}

// vector returns the vector in field slot; an absent vector is empty.
func (t fbTable) vector(slot int, elem uint64) (fbVector, error) {
	target, ok, err := t.ref(slot)
	if err != nil || !ok {
		return fbVector{b: t.b, elem: elem}, err
	}
	return t.b.vectorAt(target, elem)
}

func (b fbuf) vectorAt(pos, elem uint64) (fbVector, error) {
	if !b.has(pos, 4) {
		return fbVector{}, fmt.Errorf("vector at %d is outside the file", pos)
	}
	n := uint64(b.u32(pos))
	if n > (uint64(len(b))-pos-4)/elem {
		return fbVector{}, fmt.Errorf("vector at %d of %d x %d bytes runs past the end of the file (%d bytes)", pos, n, elem, len(b))
	}
	return fbVector{b: b, start: pos + 4, n: int(n), elem: elem}, nil
}

// str returns the string in field slot; an absent string is "".
func (t fbTable) str(slot int) (string, error) {
	v, err := t.vector(slot, 1)
	if err != nil {
		return "", err
	}
	return string(v.bytes()), nil
}

func (v fbVector) bytes() []byte { return v.b[v.start : v.start+uint64(v.n)] }

func (v fbVector) uint32At(i int) uint32 { return v.b.u32(v.start + 4*uint64(i)) }

func (v fbVector) int32s() []int32 {
	out := make([]int32, v.n)
	for i := range out {
		out[i] = int32(v.uint32At(i))
	}
	return out
}

func (v fbVector) int64s() []int64 {
	out := make([]int64, v.n)
	for i := range out {
		out[i] = int64(v.b.u64(v.start + 8*uint64(i)))
	}
	return out
}

func (v fbVector) float32s() []float32 {
	out := make([]float32, v.n)
	for i := range out {
		out[i] = math.Float32frombits(v.uint32At(i))
	}
	return out
}

// tableAt returns the i-th element of a vector of tables.
func (v fbVector) tableAt(i int) (fbTable, error) {
	pos := v.start + 4*uint64(i)
	return v.b.table(pos + uint64(v.b.u32(pos)))
}
