package gotflite

import (
	"fmt"
)

// This file decodes the parts of the TensorFlow Lite schema (schema.fbs,
// file identifier "TFL3") that the interpreter uses into plain Go values.
// Field slot numbers follow the schema's field order; a union takes two slots
// (its type, then its value) and deprecated fields keep their slots.

// Field slots of the schema tables used here.
const (
	modelOperatorCodes = 1
	modelSubgraphs     = 2
	modelBuffers       = 4
	modelSignatureDefs = 7

	opcodeDeprecatedBuiltin = 0
	opcodeCustomCode        = 1
	opcodeVersion           = 2
	opcodeBuiltinCode       = 3

	subgraphTensors   = 0
	subgraphInputs    = 1
	subgraphOutputs   = 2
	subgraphOperators = 3
	subgraphName      = 4

	tensorShape          = 0
	tensorType           = 1
	tensorBuffer         = 2
	tensorName           = 3
	tensorQuantization   = 4
	tensorIsVariable     = 5
	tensorSparsity       = 6
	tensorShapeSignature = 7

	quantScale     = 2
	quantZeroPoint = 3
	quantDetails   = 4 // union type slot
	quantDimension = 6

	operatorOpcodeIndex   = 0
	operatorInputs        = 1
	operatorOutputs       = 2
	operatorOptionsType   = 3
	operatorOptions       = 4
	operatorCustomOptions = 5
	operatorLargeOffset   = 9
	operatorLargeSize     = 10

	bufferData   = 0
	bufferOffset = 1
	bufferSize   = 2

	sigInputs        = 0
	sigOutputs       = 1
	sigKey           = 2
	sigSubgraphIndex = 4

	tensorMapName  = 0
	tensorMapIndex = 1
)

// maxRank bounds tensor rank; real models stay far below it.
const maxRank = 8

type fbModel struct {
	opcodes   []fbOpcode
	subgraphs []fbSubgraph
	buffers   []fbBuffer
	sigs      []fbSignature
}

type fbOpcode struct {
	builtin int32
	custom  string
	version int32
}

type fbBuffer struct {
	data []byte // a sub-slice of the artifact; nil when empty
}

type fbSubgraph struct {
	name    string
	tensors []fbTensor
	inputs  []int32
	outputs []int32
	ops     []fbOperator
}

type fbTensor struct {
	name       string
	shape      []int32
	shapeSig   []int32 // nil when absent
	typ        int8
	buffer     uint32
	quant      fbQuant
	isVariable bool
	sparse     bool
}

type fbQuant struct {
	scale     []float32
	zeroPoint []int64
	dim       int32
	custom    bool // QuantizationDetails set: not affine quantization
}

type fbOperator struct {
	opcode      uint32
	inputs      []int32
	outputs     []int32
	optType     uint8
	opts        fbTable // valid only when hasOpts
	hasOpts     bool
	customBytes []byte
}

type fbSignature struct {
	key      string
	inputs   []fbTensorMap
	outputs  []fbTensorMap
	subgraph uint32
}

type fbTensorMap struct {
	name  string
	index uint32
}

// decoder carries the allocation budget of one decode. Flatbuffers may share
// a table or vector between many references, so a small file could otherwise
// make the decoder copy the same data millions of times; every table and
// vector element it decodes is charged against a budget proportional to the
// file size, which legitimate files (that share little) never exhaust.
type decoder struct {
	b    fbuf
	left int64
}

// tableCost is what a decoded table is charged: about the size of the Go
// value it becomes.
const tableCost = 128

func decodeBudget(n int) int64 { return 8*int64(n) + 1<<20 }

func (d *decoder) charge(n int) error {
	d.left -= int64(n)
	if d.left < 0 {
		return fmt.Errorf("model references more data than a file of %d bytes can hold (shared tables or vectors)", len(d.b))
	}
	return nil
}

// vector reads and charges a vector field.
func (d *decoder) vector(t fbTable, slot int, elem uint64) (fbVector, error) {
	v, err := t.vector(slot, elem)
	if err != nil {
		return v, err
	}
	return v, d.charge(v.n * int(elem))
}

// tableAt reads and charges the i-th table of a vector.
func (d *decoder) tableAt(v fbVector, i int) (fbTable, error) {
	if err := d.charge(tableCost); err != nil {
		return fbTable{}, err
	}
	return v.tableAt(i)
}

// str reads and charges a string field.
func (d *decoder) str(t fbTable, slot int) (string, error) {
	v, err := d.vector(t, slot, 1)
	if err != nil {
		return "", err
	}
	return string(v.bytes()), nil
}

// decodeModel walks the whole file once, checking every reference. Errors
// name the element that is wrong; the caller wraps runtime.ErrInvalidModel.
func decodeModel(b fbuf) (*fbModel, error) {
	d := &decoder{b: b, left: decodeBudget(len(b))}
	root, err := b.root()
	if err != nil {
		return nil, fmt.Errorf("model: %v", err)
	}
	m := &fbModel{}

	ocs, err := d.vector(root, modelOperatorCodes, 4)
	if err != nil {
		return nil, fmt.Errorf("operator codes: %v", err)
	}
	m.opcodes = make([]fbOpcode, ocs.n)
	for i := range m.opcodes {
		if m.opcodes[i], err = d.decodeOpcode(ocs, i); err != nil {
			return nil, fmt.Errorf("operator code %d: %v", i, err)
		}
	}

	bufs, err := d.vector(root, modelBuffers, 4)
	if err != nil {
		return nil, fmt.Errorf("buffers: %v", err)
	}
	m.buffers = make([]fbBuffer, bufs.n)
	for i := range m.buffers {
		if m.buffers[i], err = d.decodeBuffer(bufs, i); err != nil {
			return nil, fmt.Errorf("buffer %d: %v", i, err)
		}
	}

	sgs, err := d.vector(root, modelSubgraphs, 4)
	if err != nil {
		return nil, fmt.Errorf("subgraphs: %v", err)
	}
	if sgs.n == 0 {
		return nil, fmt.Errorf("model has no subgraph")
	}
	m.subgraphs = make([]fbSubgraph, sgs.n)
	for i := range m.subgraphs {
		if m.subgraphs[i], err = d.decodeSubgraph(sgs, i); err != nil {
			return nil, fmt.Errorf("subgraph %d: %v", i, err)
		}
	}

	sigs, err := d.vector(root, modelSignatureDefs, 4)
	if err != nil {
		return nil, fmt.Errorf("signature defs: %v", err)
	}
	m.sigs = make([]fbSignature, sigs.n)
	for i := range m.sigs {
		if m.sigs[i], err = d.decodeSignature(sigs, i); err != nil {
			return nil, fmt.Errorf("signature def %d: %v", i, err)
		}
	}
	return m, nil
}

func (d *decoder) decodeOpcode(v fbVector, i int) (fbOpcode, error) {
	t, err := d.tableAt(v, i)
	if err != nil {
		return fbOpcode{}, err
	}
	dep, err := t.int8Field(opcodeDeprecatedBuiltin, 0)
	if err != nil {
		return fbOpcode{}, err
	}
	code, err := t.int32Field(opcodeBuiltinCode, 0)
	if err != nil {
		return fbOpcode{}, err
	}
	// The schema keeps the old byte-wide code for compatibility: the real
	// code is the larger of the two.
	if int32(dep) > code {
		code = int32(dep)
	}
	custom, err := d.str(t, opcodeCustomCode)
	if err != nil {
		return fbOpcode{}, err
	}
	ver, err := t.int32Field(opcodeVersion, 1)
	if err != nil {
		return fbOpcode{}, err
	}
	return fbOpcode{builtin: code, custom: custom, version: ver}, nil
}

func (d *decoder) decodeBuffer(v fbVector, i int) (fbBuffer, error) {
	t, err := d.tableAt(v, i)
	if err != nil {
		return fbBuffer{}, err
	}
	data, err := d.vector(t, bufferData, 1)
	if err != nil {
		return fbBuffer{}, err
	}
	if data.n > 0 {
		return fbBuffer{data: data.bytes()}, nil
	}
	// Models over 2 GB keep buffers after the flatbuffer: offset and size
	// are relative to the start of the file, and offset > 1 marks them.
	off, err := t.uint64Field(bufferOffset, 0)
	if err != nil {
		return fbBuffer{}, err
	}
	size, err := t.uint64Field(bufferSize, 0)
	if err != nil {
		return fbBuffer{}, err
	}
	if off <= 1 {
		return fbBuffer{}, nil
	}
	if !d.b.has(off, size) {
		return fbBuffer{}, fmt.Errorf("external data at offset %d size %d is outside the file (%d bytes)", off, size, len(d.b))
	}
	return fbBuffer{data: d.b[off : off+size]}, nil
}

func (d *decoder) decodeSubgraph(v fbVector, i int) (fbSubgraph, error) {
	t, err := d.tableAt(v, i)
	if err != nil {
		return fbSubgraph{}, err
	}
	var sg fbSubgraph
	if sg.name, err = d.str(t, subgraphName); err != nil {
		return sg, fmt.Errorf("name: %v", err)
	}
	tv, err := d.vector(t, subgraphTensors, 4)
	if err != nil {
		return sg, fmt.Errorf("tensors: %v", err)
	}
	sg.tensors = make([]fbTensor, tv.n)
	for j := range sg.tensors {
		if sg.tensors[j], err = d.decodeTensor(tv, j); err != nil {
			return sg, fmt.Errorf("tensor %d: %v", j, err)
		}
	}
	if sg.inputs, err = d.int32Vector(t, subgraphInputs); err != nil {
		return sg, fmt.Errorf("inputs: %v", err)
	}
	if sg.outputs, err = d.int32Vector(t, subgraphOutputs); err != nil {
		return sg, fmt.Errorf("outputs: %v", err)
	}
	ov, err := d.vector(t, subgraphOperators, 4)
	if err != nil {
		return sg, fmt.Errorf("operators: %v", err)
	}
	sg.ops = make([]fbOperator, ov.n)
	for j := range sg.ops {
		if sg.ops[j], err = d.decodeOperator(ov, j); err != nil {
			return sg, fmt.Errorf("operator %d: %v", j, err)
		}
	}
	return sg, nil
}

func (d *decoder) int32Vector(t fbTable, slot int) ([]int32, error) {
	v, err := d.vector(t, slot, 4)
	if err != nil {
		return nil, err
	}
	return v.int32s(), nil
}

func (d *decoder) decodeTensor(v fbVector, i int) (fbTensor, error) {
	t, err := d.tableAt(v, i)
	if err != nil {
		return fbTensor{}, err
	}
	var ft fbTensor
	if ft.name, err = d.str(t, tensorName); err != nil {
		return ft, fmt.Errorf("name: %v", err)
	}
	if ft.shape, err = d.int32Vector(t, tensorShape); err != nil {
		return ft, fmt.Errorf("shape: %v", err)
	}
	if len(ft.shape) > maxRank {
		return ft, fmt.Errorf("shape has rank %d, more than %d", len(ft.shape), maxRank)
	}
	if _, ok, err := t.field(tensorShapeSignature, 4); err != nil {
		return ft, fmt.Errorf("shape signature: %v", err)
	} else if ok {
		if ft.shapeSig, err = d.int32Vector(t, tensorShapeSignature); err != nil {
			return ft, fmt.Errorf("shape signature: %v", err)
		}
		if len(ft.shapeSig) != len(ft.shape) {
			return ft, fmt.Errorf("shape signature %v has a different rank from shape %v", ft.shapeSig, ft.shape)
		}
	}
	if ft.typ, err = t.int8Field(tensorType, 0); err != nil {
		return ft, fmt.Errorf("type: %v", err)
	}
	if ft.buffer, err = t.uint32Field(tensorBuffer, 0); err != nil {
		return ft, fmt.Errorf("buffer: %v", err)
	}
	if ft.isVariable, err = t.boolField(tensorIsVariable, false); err != nil {
		return ft, fmt.Errorf("is_variable: %v", err)
	}
	if _, ft.sparse, err = t.field(tensorSparsity, 4); err != nil {
		return ft, fmt.Errorf("sparsity: %v", err)
	}
	q, ok, err := t.subtable(tensorQuantization)
	if err != nil {
		return ft, fmt.Errorf("quantization: %v", err)
	}
	if ok {
		if ft.quant, err = d.decodeQuant(q); err != nil {
			return ft, fmt.Errorf("quantization: %v", err)
		}
	}
	return ft, nil
}

func (d *decoder) decodeQuant(t fbTable) (fbQuant, error) {
	var q fbQuant
	sv, err := d.vector(t, quantScale, 4)
	if err != nil {
		return q, fmt.Errorf("scale: %v", err)
	}
	q.scale = sv.float32s()
	zv, err := d.vector(t, quantZeroPoint, 8)
	if err != nil {
		return q, fmt.Errorf("zero_point: %v", err)
	}
	q.zeroPoint = zv.int64s()
	dt, err := t.uint8Field(quantDetails, 0)
	if err != nil {
		return q, fmt.Errorf("details: %v", err)
	}
	q.custom = dt != 0
	if q.dim, err = t.int32Field(quantDimension, 0); err != nil {
		return q, fmt.Errorf("quantized_dimension: %v", err)
	}
	return q, nil
}

func (d *decoder) decodeOperator(v fbVector, i int) (fbOperator, error) {
	t, err := d.tableAt(v, i)
	if err != nil {
		return fbOperator{}, err
	}
	var op fbOperator
	if op.opcode, err = t.uint32Field(operatorOpcodeIndex, 0); err != nil {
		return op, fmt.Errorf("opcode_index: %v", err)
	}
	if op.inputs, err = d.int32Vector(t, operatorInputs); err != nil {
		return op, fmt.Errorf("inputs: %v", err)
	}
	if op.outputs, err = d.int32Vector(t, operatorOutputs); err != nil {
		return op, fmt.Errorf("outputs: %v", err)
	}
	if op.optType, err = t.uint8Field(operatorOptionsType, 0); err != nil {
		return op, fmt.Errorf("builtin_options_type: %v", err)
	}
	if op.opts, op.hasOpts, err = t.subtable(operatorOptions); err != nil {
		return op, fmt.Errorf("builtin_options: %v", err)
	}
	cv, err := d.vector(t, operatorCustomOptions, 1)
	if err != nil {
		return op, fmt.Errorf("custom_options: %v", err)
	}
	op.customBytes = cv.bytes()
	if len(op.customBytes) == 0 {
		off, err := t.uint64Field(operatorLargeOffset, 0)
		if err != nil {
			return op, fmt.Errorf("large_custom_options_offset: %v", err)
		}
		size, err := t.uint64Field(operatorLargeSize, 0)
		if err != nil {
			return op, fmt.Errorf("large_custom_options_size: %v", err)
		}
		if off > 1 {
			if !t.b.has(off, size) {
				return op, fmt.Errorf("large custom options at %d size %d are outside the file", off, size)
			}
			op.customBytes = t.b[off : off+size]
		}
	}
	return op, nil
}

func (d *decoder) decodeSignature(v fbVector, i int) (fbSignature, error) {
	t, err := d.tableAt(v, i)
	if err != nil {
		return fbSignature{}, err
	}
	var s fbSignature
	if s.key, err = d.str(t, sigKey); err != nil {
		return s, fmt.Errorf("signature_key: %v", err)
	}
	if s.subgraph, err = t.uint32Field(sigSubgraphIndex, 0); err != nil {
		return s, fmt.Errorf("subgraph_index: %v", err)
	}
	if s.inputs, err = d.decodeTensorMaps(t, sigInputs); err != nil {
		return s, fmt.Errorf("inputs: %v", err)
	}
	if s.outputs, err = d.decodeTensorMaps(t, sigOutputs); err != nil {
		return s, fmt.Errorf("outputs: %v", err)
	}
	return s, nil
}

func (d *decoder) decodeTensorMaps(t fbTable, slot int) ([]fbTensorMap, error) {
	v, err := d.vector(t, slot, 4)
	if err != nil {
		return nil, err
	}
	out := make([]fbTensorMap, v.n)
	for i := range out {
		mt, err := d.tableAt(v, i)
		if err != nil {
			return nil, fmt.Errorf("%d: %v", i, err)
		}
		if out[i].name, err = d.str(mt, tensorMapName); err != nil {
			return nil, fmt.Errorf("%d: name: %v", i, err)
		}
		if out[i].index, err = mt.uint32Field(tensorMapIndex, 0); err != nil {
			return nil, fmt.Errorf("%d: tensor_index: %v", i, err)
		}
	}
	return out, nil
}
