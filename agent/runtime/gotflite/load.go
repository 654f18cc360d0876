package gotflite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/starling-edge/starling/agent/runtime"
)

// kernel runs one prepared operator on one executor's tensors. Kernels are
// built at load time, after every shape and type they touch was checked, so
// they cannot index out of range; an error is reserved for data-dependent
// failures.
type kernel func(ex *executor) error

// prepareFunc checks one operator and returns its kernel.
type prepareFunc func(p *opPrep) (kernel, error)

// builtinOps maps a builtin operator code to its preparation.
var builtinOps = map[int32]prepareFunc{}

// customOps maps a custom operator's code string to its preparation.
var customOps = map[string]prepareFunc{}

// opPrep is what an operator's preparation sees.
type opPrep struct {
	index    int    // operator index in the subgraph
	name     string // operator name, e.g. "CONV_2D"
	version  int32
	op       *fbOperator
	ins      []*tinfo // nil for an omitted optional input (-1)
	outs     []*tinfo
	threads  int
	scratch  *int // the largest int32 scratch any operator needs
	fscratch *int // the largest float32 scratch any operator needs
}

// needScratch reserves n int32s of per-executor scratch for the kernel.
// Operators run one at a time on an executor, so they share it.
func (p *opPrep) needScratch(n int) { *p.scratch = max(*p.scratch, n) }

// needFloatScratch reserves n float32s of per-executor scratch.
func (p *opPrep) needFloatScratch(n int) { *p.fscratch = max(*p.fscratch, n) }

// arity checks the operator's input and output counts.
func (p *opPrep) arity(minIn, maxIn, nOut int) error {
	if len(p.ins) < minIn || len(p.ins) > maxIn {
		if minIn == maxIn {
			return bad("has %d inputs, want %d", len(p.ins), minIn)
		}
		return bad("has %d inputs, want %d to %d", len(p.ins), minIn, maxIn)
	}
	if len(p.outs) != nOut {
		return bad("has %d outputs, want %d", len(p.outs), nOut)
	}
	for i := 0; i < minIn; i++ {
		if p.ins[i] == nil {
			return bad("input %d is required", i)
		}
	}
	return nil
}

// in returns input i, or nil when it is omitted or absent.
func (p *opPrep) in(i int) *tinfo {
	if i < len(p.ins) {
		return p.ins[i]
	}
	return nil
}

// options returns the builtin options table, checking its union type.
// ok is false when the model omits the options (all fields default).
func (p *opPrep) options(unionType uint8) (fbTable, bool, error) {
	if !p.op.hasOpts {
		return fbTable{}, false, nil
	}
	if p.op.optType != unionType {
		return fbTable{}, false, bad("builtin options have union type %d, want %d", p.op.optType, unionType)
	}
	return p.op.opts, true, nil
}

// types checks that t has one of the allowed types; role names it in the
// error ("input", "filter", ...).
func types(t *tinfo, role string, allowed ...ttype) error {
	for _, a := range allowed {
		if t.typ == a {
			return nil
		}
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = a.String()
	}
	return unsupported("%s %s has type %s, want %s", role, t, t.typ, strings.Join(names, " or "))
}

// loader builds a model from a decoded file.
type loader struct {
	e        *Engine
	fm       *fbModel
	sg       *fbSubgraph
	tensors  []tinfo
	threads  int
	scratch  int
	fscratch int
	batch    int              // > 0: dimension 0 of dynamic-batch tensors times batch
	consts   map[[2]int]views // decoded constants by buffer and type
}

// load is Engine.Load after the option defaults are applied.
func (e *Engine) load(artifact []byte, threads int) (*model, error) {
	consts := map[[2]int]views{}
	m, err := e.build(artifact, threads, 0, consts)
	if err != nil {
		return nil, err
	}
	m.initBatching(e, artifact, threads, consts)
	return m, nil
}

// build prepares a model from artifact. batch > 0 prepares the plan for
// that batch size (batch.go): dimension 0 of every tensor whose shape
// signature has it dynamic is multiplied by batch. consts holds constants
// already decoded, shared between the plans of one model, and gets the
// ones this build decodes.
func (e *Engine) build(artifact []byte, threads, batch int, consts map[[2]int]views) (*model, error) {
	fm, err := decodeModel(fbuf(artifact))
	if err != nil {
		return nil, invalidf("%v", err)
	}
	l := &loader{e: e, fm: fm, threads: threads, batch: batch, consts: consts}
	sig, sgIndex, err := l.pickSignature()
	if err != nil {
		return nil, err
	}
	l.sg = &fm.subgraphs[sgIndex]
	if err := l.checkOps(); err != nil {
		return nil, err
	}
	if err := l.initTensors(); err != nil {
		return nil, err
	}
	m := &model{threads: threads}
	if m.ins, m.outs, err = l.resolveIO(sig); err != nil {
		return nil, err
	}
	if m.kernels, m.opNames, err = l.prepareOps(m.ins, m.outs); err != nil {
		return nil, err
	}
	if m.sizes, err = l.plan(m.ins, m.outs); err != nil {
		return nil, err
	}
	m.tensors = l.tensors
	m.scratch = l.scratch
	m.fscratch = l.fscratch
	m.sig = l.signature(sig, m.ins, m.outs)
	m.init(e.opts.MaxConcurrent)
	return m, nil
}

// pickSignature returns the SignatureDef to serve ("serving_default" if
// there are several) and its subgraph; sig is nil when the model has none.
func (l *loader) pickSignature() (*fbSignature, int, error) {
	if len(l.fm.sigs) == 0 {
		return nil, 0, nil
	}
	sig := &l.fm.sigs[0]
	for i := range l.fm.sigs {
		if l.fm.sigs[i].key == "serving_default" {
			sig = &l.fm.sigs[i]
			break
		}
	}
	if int(sig.subgraph) >= len(l.fm.subgraphs) || sig.subgraph > 1<<30 {
		return nil, 0, invalidf("signature %q: subgraph index %d out of range (model has %d subgraphs)", sig.key, sig.subgraph, len(l.fm.subgraphs))
	}
	return sig, int(sig.subgraph), nil
}

// opcode returns the name and preparation of an operator; prep is nil when
// the operator is not implemented.
func (l *loader) opcode(op *fbOperator, index int) (name string, prep prepareFunc, version int32, err error) {
	if uint64(op.opcode) >= uint64(len(l.fm.opcodes)) {
		return "", nil, 0, invalidf("operator %d: opcode index %d out of range (model has %d operator codes)", index, op.opcode, len(l.fm.opcodes))
	}
	oc := l.fm.opcodes[op.opcode]
	if oc.builtin == opCustom {
		return oc.custom, customOps[oc.custom], oc.version, nil
	}
	return opName(oc.builtin), builtinOps[oc.builtin], oc.version, nil
}

// checkOps reports every operator the engine lacks at once, so that one
// error tells a model author all that stands in the way.
func (l *loader) checkOps() error {
	var missing []string
	seen := map[string]bool{}
	for i := range l.sg.ops {
		name, prep, _, err := l.opcode(&l.sg.ops[i], i)
		if err != nil {
			return err
		}
		if prep == nil && !seen[name] {
			seen[name] = true
			missing = append(missing, name)
		}
	}
	switch len(missing) {
	case 0:
		return nil
	case 1:
		return unsupportedf("unsupported op %s", missing[0])
	}
	return unsupportedf("unsupported ops %s", strings.Join(missing, ", "))
}

// initTensors checks every tensor's type and shape; constant data is
// decoded later, only for tensors an operator uses.
func (l *loader) initTensors() error {
	l.tensors = make([]tinfo, len(l.sg.tensors))
	maxElems := l.e.opts.MaxArenaBytes
	for i := range l.sg.tensors {
		ft := &l.sg.tensors[i]
		t := &l.tensors[i]
		t.index, t.name, t.typ, t.fb, t.buffer = i, ft.name, ttype(ft.typ), ft, ft.buffer
		t.shape = make([]int, len(ft.shape))
		t.sig = make([]int64, len(ft.shape))
		n := int64(1)
		for j, d32 := range ft.shape {
			d := int64(d32)
			if d < 0 {
				return invalidf("%s: shape %v has a negative dimension", t, ft.shape)
			}
			if j == 0 && l.batch > 0 && len(ft.shapeSig) > 0 && ft.shapeSig[0] < 0 {
				d *= int64(l.batch)
			}
			if d != 0 && n > maxElems/d {
				return invalidf("%s: shape %v has more elements than the %d-byte limit allows", t, ft.shape, maxElems)
			}
			n *= d
			t.shape[j] = int(d)
			t.sig[j] = int64(d)
			if ft.shapeSig != nil && ft.shapeSig[j] < 0 {
				t.sig[j] = -1
			}
		}
		t.n = int(n)
	}
	return nil
}

// tensor returns the tensor at index i of the subgraph.
func (l *loader) tensor(i int32, what string) (*tinfo, error) {
	if i < 0 || int(i) >= len(l.tensors) {
		return nil, invalidf("%s: tensor index %d out of range (subgraph has %d tensors)", what, i, len(l.tensors))
	}
	return &l.tensors[i], nil
}

// resolveIO returns the input and output tensors in signature order.
func (l *loader) resolveIO(sig *fbSignature) (ins, outs []int, err error) {
	if ins, err = l.ioList("input", l.sg.inputs, sig, true); err != nil {
		return nil, nil, err
	}
	if outs, err = l.ioList("output", l.sg.outputs, sig, false); err != nil {
		return nil, nil, err
	}
	return ins, outs, nil
}

func (l *loader) ioList(role string, graph []int32, sig *fbSignature, isInput bool) ([]int, error) {
	seen := map[int32]bool{}
	for _, g := range graph {
		t, err := l.tensor(g, "subgraph "+role)
		if err != nil {
			return nil, err
		}
		if seen[g] {
			return nil, invalidf("subgraph lists %s %s twice", role, t)
		}
		seen[g] = true
		if _, ok := t.typ.size(); !ok {
			return nil, unsupportedf("%s %s has type %s", role, t, t.typ)
		}
		if t.fb.isVariable {
			return nil, unsupportedf("%s %s is a variable", role, t)
		}
	}
	order := make([]int, len(graph))
	for i, g := range graph {
		order[i] = int(g)
	}
	if sig == nil {
		return order, nil
	}
	maps := sig.outputs
	if isInput {
		maps = sig.inputs
	}
	if len(maps) != len(graph) {
		return nil, invalidf("signature %q has %d %ss, subgraph has %d", sig.key, len(maps), role, len(graph))
	}
	used := map[uint32]bool{}
	for i, tm := range maps {
		if tm.index > 1<<30 || !seen[int32(tm.index)] {
			return nil, invalidf("signature %q %s %q: tensor %d is not a subgraph %s", sig.key, role, tm.name, tm.index, role)
		}
		if used[tm.index] {
			return nil, invalidf("signature %q maps tensor %d twice", sig.key, tm.index)
		}
		used[tm.index] = true
		order[i] = int(tm.index)
	}
	return order, nil
}

// useConst makes t a constant, decoding its buffer once.
func (l *loader) useConst(t *tinfo, cache map[[2]int]views) error {
	if t.kind == kindConst {
		return nil
	}
	size, ok := t.typ.size()
	if !ok {
		return unsupportedf("constant %s has type %s", t, t.typ)
	}
	if t.fb.sparse {
		return unsupportedf("constant %s is sparse", t)
	}
	buf := l.fm.buffers[t.buffer].data
	if int64(len(buf)) != int64(t.n)*int64(size) {
		return invalidf("constant %s: shape %v of %s needs %d bytes, buffer %d has %d", t, t.shape, t.typ, int64(t.n)*int64(size), t.buffer, len(buf))
	}
	key := [2]int{int(t.buffer), int(t.typ)}
	v, ok := cache[key]
	if !ok {
		v = decodeConst(t.typ, buf, t.n)
		cache[key] = v
	}
	t.kind, t.c = kindConst, v
	return nil
}

// foldFloat16Dequantize evaluates, at load time, a DEQUANTIZE of a
// constant FLOAT16 tensor (how the converter stores float16-quantized
// weights) into a constant float32 output, as TFLite does once at Prepare.
// It reports false, changing nothing, for any other operator.
func (l *loader) foldFloat16Dequantize(op *fbOperator, name string) (bool, error) {
	if name != "DEQUANTIZE" || len(op.inputs) != 1 || len(op.outputs) != 1 {
		return false, nil
	}
	in, err := l.tensor(op.inputs[0], "input 0")
	if err != nil || in.typ != tFloat16 || in.kind != kindUnused {
		return false, err
	}
	if has, err := l.hasData(in); err != nil || !has {
		return false, err
	}
	out, err := l.tensor(op.outputs[0], "output 0")
	if err != nil {
		return false, err
	}
	if out.typ != tFloat32 {
		return false, fmt.Errorf("output %s has type %s, want FLOAT32", out, out.typ)
	}
	if out.kind != kindUnused {
		return false, fmt.Errorf("output %s is already written or constant", out)
	}
	if has, err := l.hasData(out); err != nil {
		return false, err
	} else if has {
		return false, fmt.Errorf("output %s is a constant", out)
	}
	if in.n != out.n {
		return false, fmt.Errorf("input %s and output %s differ in size", in, out)
	}
	if in.fb.sparse {
		return false, fmt.Errorf("constant %s is sparse", in)
	}
	buf := l.fm.buffers[in.buffer].data
	if int64(len(buf)) != 2*int64(in.n) {
		return false, fmt.Errorf("constant %s: shape %v of FLOAT16 needs %d bytes, buffer %d has %d", in, in.shape, 2*int64(in.n), in.buffer, len(buf))
	}
	key := [2]int{int(in.buffer), int(tFloat32)<<8 | int(tFloat16)} // float32 from float16 data
	v, ok := l.consts[key]
	if !ok {
		s := make([]float32, in.n)
		for j := range s {
			s[j] = float16to32(binary.LittleEndian.Uint16(buf[2*j:]))
		}
		v = views{f32: [][]float32{s}}
		l.consts[key] = v
	}
	out.kind, out.c = kindConst, v
	return true, nil
}

// float16to32 converts an IEEE 754 binary16 value to float32 exactly.
func float16to32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // infinity or NaN, keeping the payload
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
	case frac == 0: // signed zero
		return math.Float32frombits(sign)
	}
	// Subnormal: frac x 2^-24, exact in float32.
	f := float32(frac) * (1.0 / (1 << 24))
	return math.Float32frombits(math.Float32bits(f) | sign)
}

// hasData reports whether t's buffer holds data (a constant).
func (l *loader) hasData(t *tinfo) (bool, error) {
	if t.buffer == 0 {
		return false, nil
	}
	if uint64(t.buffer) >= uint64(len(l.fm.buffers)) {
		return false, invalidf("%s: buffer index %d out of range (model has %d buffers)", t, t.buffer, len(l.fm.buffers))
	}
	return len(l.fm.buffers[t.buffer].data) > 0, nil
}

// prepareOps checks the data flow (every tensor is written once, before it
// is read), resolves tensors and prepares each operator's kernel.
func (l *loader) prepareOps(ins, outs []int) ([]kernel, []string, error) {
	cache := l.consts
	nops := len(l.sg.ops)
	for _, i := range ins {
		t := &l.tensors[i]
		if has, err := l.hasData(t); err != nil {
			return nil, nil, err
		} else if has {
			return nil, nil, invalidf("input %s is a constant", t)
		}
		t.kind, t.first, t.last = kindArena, -1, -1
	}
	kernels := make([]kernel, nops)
	names := make([]string, nops)
	for i := range l.sg.ops {
		op := &l.sg.ops[i]
		name, prep, version, err := l.opcode(op, i)
		if err != nil {
			return nil, nil, err
		}
		names[i] = name
		if folded, err := l.foldFloat16Dequantize(op, name); err != nil {
			return nil, nil, invalidf("operator %d (%s): %v", i, name, err)
		} else if folded {
			kernels[i] = func(*executor) error { return nil }
			continue
		}
		p := &opPrep{index: i, name: name, version: version, op: op, threads: l.threads, scratch: &l.scratch, fscratch: &l.fscratch}
		p.ins = make([]*tinfo, len(op.inputs))
		for j, ti := range op.inputs {
			if ti == -1 {
				continue // an omitted optional input
			}
			t, err := l.tensor(ti, fmt.Sprintf("operator %d (%s) input %d", i, name, j))
			if err != nil {
				return nil, nil, err
			}
			switch t.kind {
			case kindUnused:
				has, err := l.hasData(t)
				if err != nil {
					return nil, nil, err
				}
				if !has {
					return nil, nil, invalidf("operator %d (%s) input %d: %s is read before any operator writes it", i, name, j, t)
				}
				if err := l.useConst(t, cache); err != nil {
					return nil, nil, err
				}
			case kindArena:
				t.last = i
			}
			p.ins[j] = t
		}
		p.outs = make([]*tinfo, len(op.outputs))
		for j, ti := range op.outputs {
			t, err := l.tensor(ti, fmt.Sprintf("operator %d (%s) output %d", i, name, j))
			if err != nil {
				return nil, nil, err
			}
			if t.kind != kindUnused {
				return nil, nil, invalidf("operator %d (%s) output %d: %s is already written or constant", i, name, j, t)
			}
			if has, err := l.hasData(t); err != nil {
				return nil, nil, err
			} else if has {
				return nil, nil, invalidf("operator %d (%s) output %d: %s is a constant", i, name, j, t)
			}
			if _, ok := t.typ.size(); !ok {
				return nil, nil, unsupportedf("operator %d (%s) output %s has type %s", i, name, t, t.typ)
			}
			if t.fb.isVariable {
				return nil, nil, unsupportedf("operator %d (%s) output %s is a variable", i, name, t)
			}
			t.kind, t.first, t.last = kindArena, i, i
			p.outs[j] = t
		}
		k, err := prep(p)
		if err != nil {
			var oe *opError
			if errors.As(err, &oe) {
				if oe.unsupported {
					return nil, nil, unsupportedf("operator %d (%s v%d): %s", i, name, version, oe.msg)
				}
				return nil, nil, invalidf("operator %d (%s): %s", i, name, oe.msg)
			}
			return nil, nil, err
		}
		kernels[i] = k
	}
	for _, o := range outs {
		t := &l.tensors[o]
		switch t.kind {
		case kindUnused:
			has, err := l.hasData(t)
			if err != nil {
				return nil, nil, err
			}
			if !has {
				return nil, nil, invalidf("output %s is never written", t)
			}
			if err := l.useConst(t, cache); err != nil {
				return nil, nil, err
			}
		case kindArena:
			t.last = nops
		}
	}
	return kernels, names, nil
}

// plan assigns every arena tensor an offset in its type's arena so that
// tensors whose lifetimes overlap never share memory. It places tensors
// largest first at the lowest offset that fits ("greedy by size", as the
// TFLite arena planner does), which keeps the arena close to the peak of
// simultaneously live data.
func (l *loader) plan(ins, outs []int) (arenaSizes, error) {
	var sizes arenaSizes
	var byType [len(sizes)][]*tinfo
	for i := range l.tensors {
		t := &l.tensors[i]
		if t.kind == kindArena {
			s := arenaSlot(t.typ)
			byType[s] = append(byType[s], t)
		}
	}
	var total int64
	for s, ts := range byType {
		sort.SliceStable(ts, func(a, b int) bool { return ts[a].n > ts[b].n })
		var placed []*tinfo // sorted by offset
		for _, t := range ts {
			off := 0
			for _, p := range placed {
				if p.last < t.first || t.last < p.first {
					continue // lifetimes do not overlap
				}
				if p.off >= off+t.n {
					break // the gap before p fits t
				}
				if e := p.off + p.n; e > off {
					off = e
				}
			}
			t.off = off
			k := sort.Search(len(placed), func(i int) bool { return placed[i].off > off })
			placed = append(placed, nil)
			copy(placed[k+1:], placed[k:])
			placed[k] = t
			if e := off + t.n; e > sizes[s] {
				sizes[s] = e
			}
		}
		if len(ts) > 0 {
			size, _ := ts[0].typ.size()
			total += int64(sizes[s]) * int64(size)
		}
	}
	if total > l.e.opts.MaxArenaBytes {
		return sizes, invalidf("model needs a %d-byte arena, more than the %d-byte limit", total, l.e.opts.MaxArenaBytes)
	}
	return sizes, nil
}

// signature builds the runtime signature, with SignatureDef names when the
// model has them and tensor names otherwise.
func (l *loader) signature(sig *fbSignature, ins, outs []int) runtime.Signature {
	spec := func(idx []int, maps []fbTensorMap) []runtime.TensorSpec {
		out := make([]runtime.TensorSpec, len(idx))
		for i, ti := range idx {
			t := &l.tensors[ti]
			name := t.name
			if maps != nil {
				name = maps[i].name
			}
			out[i] = runtime.TensorSpec{Name: name, DType: t.typ.oip(), Shape: append([]int64(nil), t.sig...)}
		}
		return out
	}
	if sig == nil {
		return runtime.Signature{Inputs: spec(ins, nil), Outputs: spec(outs, nil)}
	}
	return runtime.Signature{Inputs: spec(ins, sig.inputs), Outputs: spec(outs, sig.outputs)}
}
