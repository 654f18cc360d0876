package gotflite

import (
	"fmt"
	"math"
)

// Data-movement and resizing operators: TRANSPOSE, STRIDED_SLICE, SLICE,
// SPLIT, SPLIT_V, UNPACK, GATHER, SPACE_TO_DEPTH, DEPTH_TO_SPACE,
// RESIZE_NEAREST_NEIGHBOR and RESIZE_BILINEAR.
//
// Every operator but RESIZE_BILINEAR only moves elements, so it is
// prepared as a table (output element i is input element tab[i]) computed
// once at load, and runs the same for every element type. GATHER takes
// constant indices only, checked at load.

func init() {
	builtinOps[opTranspose] = prepTranspose
	builtinOps[opStridedSlice] = prepStridedSlice
	builtinOps[opSplit] = prepSplit
	builtinOps[opGather] = prepGather
	builtinOps[opResizeNearestNeighbor] = prepResizeNearest
	builtinOps[opResizeBilinear] = prepResizeBilinear
	builtinOps[opSplitV] = prepSplitV
	builtinOps[opUnpack] = prepUnpack
	builtinOps[opSlice] = prepSlice
	builtinOps[opSpaceToDepth] = func(p *opPrep) (kernel, error) { return prepSpaceDepth(p, optSpaceToDepth, true) }
	builtinOps[opDepthToSpace] = func(p *opPrep) (kernel, error) { return prepSpaceDepth(p, optDepthToSpace, false) }
}

// Builtin options union types used here.
const (
	optResizeBilinear        = 15
	optGather                = 23
	optStridedSlice          = 32
	optSplit                 = 35
	optSpaceToDepth          = 19
	optSlice                 = 48
	optUnpack                = 64
	optResizeNearestNeighbor = 74
	optSplitV                = 79
	optDepthToSpace          = 94
)

// sameQuant checks that a data-movement operator's output has its input's
// type and quantization: the operators copy values, they do not requantize.
func sameQuant(in, out *tinfo) error {
	if in.typ != out.typ {
		return bad("input %s has type %s, output %s has %s", in, in.typ, out, out.typ)
	}
	if _, ok := in.typ.size(); !ok {
		return unsupported("input %s has type %s", in, in.typ)
	}
	if in.typ != tInt8 && in.typ != tUint8 && in.typ != tInt16 {
		return nil
	}
	qi, qo := &in.fb.quant, &out.fb.quant
	if len(qi.scale) == 0 && len(qo.scale) == 0 {
		return nil
	}
	si, zi, err := perTensor(in, "input")
	if err != nil {
		return err
	}
	so, zo, err := perTensor(out, "output")
	if err != nil {
		return err
	}
	if si != so || zi != zo {
		return unsupported("output %s (scale %g, zero point %d) differs from input %s (scale %g, zero point %d): requantizing is not supported", out, so, zo, in, si, zi)
	}
	return nil
}

// strides returns the row-major element strides of shape.
func strides(shape []int) []int {
	s := make([]int, len(shape))
	n := 1
	for i := len(shape) - 1; i >= 0; i-- {
		s[i] = n
		n *= shape[i]
	}
	return s
}

// tableKernel copies in[tab[i]] to out[i] for every output element; tab
// was checked against in's size.
func tableKernel(in, out *tinfo, tab []int32) kernel {
	i, o := in.index, out.index
	switch in.typ {
	case tFloat32:
		return func(ex *executor) error { gatherTab(ex.v.f32[o], ex.v.f32[i], tab); return nil }
	case tInt32:
		return func(ex *executor) error { gatherTab(ex.v.i32[o], ex.v.i32[i], tab); return nil }
	case tUint8:
		return func(ex *executor) error { gatherTab(ex.v.u8[o], ex.v.u8[i], tab); return nil }
	case tInt8:
		return func(ex *executor) error { gatherTab(ex.v.i8[o], ex.v.i8[i], tab); return nil }
	case tInt16:
		return func(ex *executor) error { gatherTab(ex.v.i16[o], ex.v.i16[i], tab); return nil }
	case tInt64:
		return func(ex *executor) error { gatherTab(ex.v.i64[o], ex.v.i64[i], tab); return nil }
	case tBool:
		return func(ex *executor) error { gatherTab(ex.v.b[o], ex.v.b[i], tab); return nil }
	}
	return nil
}

func gatherTab[T any](y, x []T, tab []int32) {
	y = y[:len(tab)]
	for i, t := range tab {
		y[i] = x[t]
	}
}

// tableOp checks in and out and returns the table kernel.
func tableOp(in, out *tinfo, tab []int32) (kernel, error) {
	if err := sameQuant(in, out); err != nil {
		return nil, err
	}
	if len(tab) != out.n {
		return nil, bad("output %s has %d elements, the operator makes %d", out, out.n, len(tab))
	}
	return tableKernel(in, out, tab), nil
}

// checkShape compares an output's shape in the file with the one the
// operator computes.
func checkShape(out *tinfo, want []int) error {
	if !sameShape(out.shape, want) {
		return bad("output %s has shape %v, want %v", out, out.shape, want)
	}
	return nil
}

func prepTranspose(p *opPrep) (kernel, error) {
	if err := p.arity(2, 2, 1); err != nil {
		return nil, err
	}
	in, out := p.ins[0], p.outs[0]
	perm, err := constInts(p.ins[1], "permutation")
	if err != nil {
		return nil, err
	}
	r := len(in.shape)
	if len(perm) != r {
		return nil, bad("permutation %v has %d entries for rank %d", perm, len(perm), r)
	}
	seen := make([]bool, r)
	shape := make([]int, r)
	for i, a := range perm {
		if a < 0 || a >= r || seen[a] {
			return nil, bad("permutation %v is not a permutation of 0..%d", perm, r-1)
		}
		seen[a] = true
		shape[i] = in.shape[a]
	}
	if err := checkShape(out, shape); err != nil {
		return nil, err
	}
	is := strides(in.shape)
	tab := make([]int32, out.n)
	idx := make([]int, r)
	for o := range tab {
		src := 0
		for d := 0; d < r; d++ {
			src += idx[d] * is[perm[d]]
		}
		tab[o] = int32(src)
		for d := r - 1; d >= 0; d-- {
			if idx[d]++; idx[d] < shape[d] {
				break
			}
			idx[d] = 0
		}
	}
	return tableOp(in, out, tab)
}

// sliceAxis is one axis of a strided slice: count elements from start,
// step stride.
type sliceAxis struct{ start, stride, count int }

func prepStridedSlice(p *opPrep) (kernel, error) {
	if err := p.arity(4, 4, 1); err != nil {
		return nil, err
	}
	in, out := p.ins[0], p.outs[0]
	opts, _, err := p.options(optStridedSlice)
	if err != nil {
		return nil, err
	}
	var masks [5]int32
	for i := range masks {
		if masks[i], err = opts.int32Field(i, 0); err != nil {
			return nil, bad("options: %v", err)
		}
	}
	offset, err := opts.boolField(5, false)
	if err != nil {
		return nil, bad("options: %v", err)
	}
	beginMask, endMask, ellipsisMask, newAxisMask, shrinkMask := masks[0], masks[1], masks[2], masks[3], masks[4]
	if ellipsisMask != 0 || newAxisMask != 0 || offset {
		return nil, unsupported("ellipsis_mask %d, new_axis_mask %d, offset %v: only begin, end and shrink masks are supported", ellipsisMask, newAxisMask, offset)
	}
	r := len(in.shape)
	var vals [3][]int
	for k, role := range []string{"begin", "end", "strides"} {
		if vals[k], err = constInts(p.ins[1+k], role); err != nil {
			return nil, err
		}
		if len(vals[k]) != r {
			return nil, bad("%s has %d entries for rank %d", role, len(vals[k]), r)
		}
	}
	axes := make([]sliceAxis, r)
	var shape []int
	for a := 0; a < r; a++ {
		size, stride := int64(in.shape[a]), int64(vals[2][a])
		if stride == 0 {
			return nil, bad("stride of axis %d is 0", a)
		}
		start, stop := int64(vals[0][a]), int64(vals[1][a])
		if beginMask&(1<<a) != 0 {
			start = math.MinInt32
			if stride < 0 {
				start = math.MaxInt32
			}
		}
		if start < 0 {
			start += size
		}
		shrink := shrinkMask&(1<<a) != 0
		if !shrink && endMask&(1<<a) != 0 {
			stop = math.MaxInt32
			if stride < 0 {
				stop = math.MinInt32
			}
		}
		if !shrink && stop < 0 {
			stop += size
		}
		if stride > 0 {
			start = min(max(start, 0), size)
			stop = min(max(stop, 0), size)
		} else {
			start = min(max(start, -1), size-1)
			stop = min(max(stop, -1), size-1)
		}
		if shrink {
			stop = start + 1
			if stride < 0 || start < 0 || start >= size {
				return nil, bad("shrunk axis %d starts at %d, outside its size %d", a, vals[0][a], size)
			}
		}
		var count int64
		if stride > 0 && stop > start {
			count = (stop - start + stride - 1) / stride
		} else if stride < 0 && start > stop {
			count = (start - stop - stride - 1) / -stride
		}
		axes[a] = sliceAxis{int(start), int(stride), int(count)}
		if !shrink {
			shape = append(shape, int(count))
		}
	}
	if err := checkShape(out, shape); err != nil {
		return nil, err
	}
	return tableOp(in, out, sliceTable(in.shape, axes))
}

func prepSplit(p *opPrep) (kernel, error) {
	if len(p.ins) != 2 || p.ins[0] == nil || p.ins[1] == nil {
		return nil, bad("has %d inputs, want 2", len(p.ins))
	}
	axisT, in := p.ins[0], p.ins[1]
	axes, err := constInts(axisT, "axis")
	if err != nil {
		return nil, err
	}
	if len(axes) != 1 {
		return nil, bad("axis has %d values, want 1", len(axes))
	}
	r := len(in.shape)
	axis := axes[0]
	if axis < 0 {
		axis += r
	}
	if axis < 0 || axis >= r {
		return nil, bad("axis %d out of range for rank %d", axes[0], r)
	}
	opts, ok, err := p.options(optSplit)
	if err != nil {
		return nil, err
	}
	num := len(p.outs)
	if ok {
		n, err := opts.int32Field(0, 0)
		if err != nil {
			return nil, bad("options: %v", err)
		}
		if int(n) != num {
			return nil, bad("num_splits is %d, operator has %d outputs", n, num)
		}
	}
	if num == 0 || in.shape[axis]%num != 0 {
		return nil, bad("axis %d of size %d does not split into %d", axis, in.shape[axis], num)
	}
	sizes := make([]int, num)
	for i := range sizes {
		sizes[i] = in.shape[axis] / num
	}
	return splitKernel(in, p.outs, axis, sizes, false)
}

// splitKernel copies consecutive parts of in along axis, of the given
// sizes, to outs; squeeze drops the axis from the outputs' shapes
// (UNPACK).
func splitKernel(in *tinfo, outs []*tinfo, axis int, sizes []int, squeeze bool) (kernel, error) {
	outer := numElements(in.shape[:axis])
	inner := numElements(in.shape[axis+1:])
	kernels := make([]kernel, len(outs))
	first := 0
	for s, out := range outs {
		part := sizes[s]
		shape := append([]int(nil), in.shape...)
		shape[axis] = part
		if squeeze {
			shape = append(shape[:axis:axis], in.shape[axis+1:]...)
		}
		if err := checkShape(out, shape); err != nil {
			return nil, err
		}
		tab := make([]int32, 0, out.n)
		for o := 0; o < outer; o++ {
			base := (o*in.shape[axis] + first) * inner
			for k := 0; k < part*inner; k++ {
				tab = append(tab, int32(base+k))
			}
		}
		first += part
		var err error
		if kernels[s], err = tableOp(in, out, tab); err != nil {
			return nil, err
		}
	}
	return func(ex *executor) error {
		for _, k := range kernels {
			if err := k(ex); err != nil {
				return err
			}
		}
		return nil
	}, nil
}

// normAxis resolves a possibly negative axis of a rank-r tensor.
func normAxis(axis, r int) (int, error) {
	if axis < 0 {
		axis += r
	}
	if axis < 0 || axis >= r {
		return 0, bad("axis %d out of range for rank %d", axis, r)
	}
	return axis, nil
}

func prepSplitV(p *opPrep) (kernel, error) {
	if len(p.ins) != 3 || p.ins[0] == nil || p.ins[1] == nil || p.ins[2] == nil {
		return nil, bad("has %d inputs, want 3", len(p.ins))
	}
	in := p.ins[0]
	sizes, err := constInts(p.ins[1], "size_splits")
	if err != nil {
		return nil, err
	}
	axes, err := constInts(p.ins[2], "axis")
	if err != nil {
		return nil, err
	}
	if len(axes) != 1 {
		return nil, bad("axis has %d values, want 1", len(axes))
	}
	axis, err := normAxis(axes[0], len(in.shape))
	if err != nil {
		return nil, err
	}
	if len(sizes) != len(p.outs) || len(sizes) == 0 {
		return nil, bad("size_splits has %d values for %d outputs", len(sizes), len(p.outs))
	}
	// One size may be -1: the rest of the axis.
	sum, unknown := 0, -1
	for i, v := range sizes {
		switch {
		case v == -1 && unknown < 0:
			unknown = i
		case v < 0:
			return nil, bad("size_splits %v has a negative size", sizes)
		default:
			sum += v
		}
	}
	if unknown >= 0 {
		if sum > in.shape[axis] {
			return nil, bad("size_splits %v exceed axis size %d", sizes, in.shape[axis])
		}
		sizes[unknown] = in.shape[axis] - sum
	} else if sum != in.shape[axis] {
		return nil, bad("size_splits %v do not add up to axis size %d", sizes, in.shape[axis])
	}
	return splitKernel(in, p.outs, axis, sizes, false)
}

func prepUnpack(p *opPrep) (kernel, error) {
	if len(p.ins) != 1 || p.ins[0] == nil {
		return nil, bad("has %d inputs, want 1", len(p.ins))
	}
	in := p.ins[0]
	opts, _, err := p.options(optUnpack)
	if err != nil {
		return nil, err
	}
	num, err := opts.int32Field(0, 0)
	if err != nil {
		return nil, bad("options: %v", err)
	}
	axis32, err := opts.int32Field(1, 0)
	if err != nil {
		return nil, bad("options: %v", err)
	}
	axis, err := normAxis(int(axis32), len(in.shape))
	if err != nil {
		return nil, err
	}
	if int(num) != len(p.outs) || in.shape[axis] != len(p.outs) {
		return nil, bad("num %d, %d outputs, axis %d of size %d: all must agree", num, len(p.outs), axis, in.shape[axis])
	}
	sizes := make([]int, len(p.outs))
	for i := range sizes {
		sizes[i] = 1
	}
	return splitKernel(in, p.outs, axis, sizes, true)
}

func prepSlice(p *opPrep) (kernel, error) {
	if err := p.arity(3, 3, 1); err != nil {
		return nil, err
	}
	in, out := p.ins[0], p.outs[0]
	begin, err := constInts(p.ins[1], "begin")
	if err != nil {
		return nil, err
	}
	size, err := constInts(p.ins[2], "size")
	if err != nil {
		return nil, err
	}
	r := len(in.shape)
	if len(begin) != r || len(size) != r {
		return nil, bad("begin %v and size %v must have %d values", begin, size, r)
	}
	axes := make([]sliceAxis, r)
	shape := make([]int, r)
	for a := 0; a < r; a++ {
		b, n := begin[a], size[a]
		if n == -1 {
			n = in.shape[a] - b
		}
		if b < 0 || n < 0 || b+n > in.shape[a] {
			return nil, bad("axis %d: begin %d size %d is outside its size %d", a, begin[a], size[a], in.shape[a])
		}
		axes[a] = sliceAxis{start: b, stride: 1, count: n}
		shape[a] = n
	}
	if err := checkShape(out, shape); err != nil {
		return nil, err
	}
	return tableOp(in, out, sliceTable(in.shape, axes))
}

// sliceTable lists the input offsets of a (strided) slice in row-major
// output order.
func sliceTable(inShape []int, axes []sliceAxis) []int32 {
	is := strides(inShape)
	r := len(axes)
	n := 1
	for _, ax := range axes {
		n *= ax.count
	}
	tab := make([]int32, 0, n)
	idx := make([]int, r)
	for k := 0; k < n; k++ {
		src := 0
		for d := 0; d < r; d++ {
			src += (axes[d].start + idx[d]*axes[d].stride) * is[d]
		}
		tab = append(tab, int32(src))
		for d := r - 1; d >= 0; d-- {
			if idx[d]++; idx[d] < axes[d].count {
				break
			}
			idx[d] = 0
		}
	}
	return tab
}

// prepSpaceDepth is SPACE_TO_DEPTH (toDepth) and DEPTH_TO_SPACE on NHWC
// tensors: output channel (dy*block+dx)*C + c of a cell holds input pixel
// (dy, dx) of the block, channel c.
func prepSpaceDepth(p *opPrep, union uint8, toDepth bool) (kernel, error) {
	if err := p.arity(1, 1, 1); err != nil {
		return nil, err
	}
	in, out := p.ins[0], p.outs[0]
	opts, _, err := p.options(union)
	if err != nil {
		return nil, err
	}
	bs32, err := opts.int32Field(0, 0)
	if err != nil {
		return nil, bad("options: %v", err)
	}
	bs := int(bs32)
	if bs < 1 || len(in.shape) != 4 {
		return nil, bad("block size %d on input %s of rank %d, want a positive block size and rank 4", bs, in, len(in.shape))
	}
	nb, h, w, c := in.shape[0], in.shape[1], in.shape[2], in.shape[3]
	var shape []int
	if toDepth {
		if h%bs != 0 || w%bs != 0 {
			return nil, bad("input %s height %d and width %d are not multiples of block size %d", in, h, w, bs)
		}
		shape = []int{nb, h / bs, w / bs, c * bs * bs}
	} else {
		if c%(bs*bs) != 0 {
			return nil, bad("input %s depth %d is not a multiple of block size %d squared", in, c, bs)
		}
		shape = []int{nb, h * bs, w * bs, c / (bs * bs)}
	}
	if err := checkShape(out, shape); err != nil {
		return nil, err
	}
	// Walk the space side (the larger grid) and pair each element with
	// its offset on the depth side.
	sb, sh, sw, sc := nb, h, w, c // space-side shape
	if !toDepth {
		sh, sw, sc = shape[1], shape[2], shape[3]
	}
	dh, dw, dc := sh/bs, sw/bs, sc*bs*bs // depth-side shape
	tab := make([]int32, out.n)
	for b := 0; b < sb; b++ {
		for y := 0; y < sh; y++ {
			for x := 0; x < sw; x++ {
				for k := 0; k < sc; k++ {
					space := ((b*sh+y)*sw+x)*sc + k
					depth := ((b*dh+y/bs)*dw+x/bs)*dc + ((y%bs)*bs+x%bs)*sc + k
					if toDepth {
						tab[depth] = int32(space)
					} else {
						tab[space] = int32(depth)
					}
				}
			}
		}
	}
	return tableOp(in, out, tab)
}

func prepGather(p *opPrep) (kernel, error) {
	if err := p.arity(2, 2, 1); err != nil {
		return nil, err
	}
	params, indices, out := p.ins[0], p.ins[1], p.outs[0]
	opts, _, err := p.options(optGather)
	if err != nil {
		return nil, err
	}
	axis32, err := opts.int32Field(0, 0)
	if err != nil {
		return nil, bad("options: %v", err)
	}
	batchDims, err := opts.int32Field(1, 0)
	if err != nil {
		return nil, bad("options: %v", err)
	}
	if batchDims != 0 {
		return nil, unsupported("batch_dims %d, only 0 is supported", batchDims)
	}
	r := len(params.shape)
	axis := int(axis32)
	if axis < 0 {
		axis += r
	}
	if axis < 0 || axis >= r {
		return nil, bad("axis %d out of range for rank %d", axis32, r)
	}
	if err := types(indices, "indices", tInt32, tInt64); err != nil {
		return nil, err
	}
	shape := append(append(append([]int(nil), params.shape[:axis]...), indices.shape...), params.shape[axis+1:]...)
	if len(shape) > maxRank {
		return nil, unsupported("output rank %d", len(shape))
	}
	if err := checkShape(out, shape); err != nil {
		return nil, err
	}
	if err := sameQuant(params, out); err != nil {
		return nil, err
	}
	g := gather{outer: numElements(params.shape[:axis]), dim: params.shape[axis], inner: numElements(params.shape[axis+1:]), n: indices.n}
	if indices.kind == kindConst {
		idx, err := constInts(indices, "indices")
		if err != nil {
			return nil, err
		}
		tab := make([]int32, out.n)
		if err := g.table(tab, idx); err != nil {
			return nil, bad("%v", err)
		}
		return tableOp(params, out, tab)
	}
	return nil, unsupported("indices %s are computed at run time; only constant indices are supported", indices)
}

// gather describes GATHER along one axis: for each of outer slices, for
// each of n indices, inner elements.
type gather struct{ outer, dim, inner, n int }

func (g gather) table(tab []int32, idx []int) error {
	k := 0
	for o := 0; o < g.outer; o++ {
		for _, v := range idx[:g.n] {
			if v < 0 || v >= g.dim {
				return fmt.Errorf("index %d is outside axis of size %d", v, g.dim)
			}
			base := (o*g.dim + v) * g.inner
			for e := 0; e < g.inner; e++ {
				tab[k] = int32(base + e)
				k++
			}
		}
	}
	return nil
}

// resizeGeometry checks a 4-D NHWC resize and returns its input and output
// sizes; the size input must be a constant matching the output shape.
func resizeGeometry(p *opPrep) (in, out *tinfo, ih, iw, oh, ow int, err error) {
	if err = p.arity(2, 2, 1); err != nil {
		return
	}
	in, out = p.ins[0], p.outs[0]
	if len(in.shape) != 4 || len(out.shape) != 4 {
		err = bad("input %s and output %s must have rank 4", in, out)
		return
	}
	size, e := constInts(p.ins[1], "size")
	if e != nil {
		err = e
		return
	}
	if len(size) != 2 || size[0] <= 0 || size[1] <= 0 {
		err = bad("size %v, want two positive values", size)
		return
	}
	ih, iw, oh, ow = in.shape[1], in.shape[2], size[0], size[1]
	if ih == 0 || iw == 0 {
		err = bad("input %s is empty", in)
		return
	}
	err = checkShape(out, []int{in.shape[0], oh, ow, in.shape[3]})
	return
}

// resizeFlags reads align_corners and half_pixel_centers.
func resizeFlags(p *opPrep, union uint8, alignSlot, halfSlot int) (align, half bool, err error) {
	opts, _, err := p.options(union)
	if err != nil {
		return false, false, err
	}
	if align, err = opts.boolField(alignSlot, false); err != nil {
		return false, false, bad("options: %v", err)
	}
	if half, err = opts.boolField(halfSlot, false); err != nil {
		return false, false, bad("options: %v", err)
	}
	if align && half {
		return false, false, bad("align_corners and half_pixel_centers are both set")
	}
	return align, half, nil
}

// nearest maps an output coordinate to its input coordinate as TFLite's
// GetNearestNeighbor does.
func nearest(v, inSize, outSize int, align, half bool) int {
	scale := float32(inSize) / float32(outSize)
	if align && outSize > 1 {
		scale = float32(inSize-1) / float32(outSize-1)
	}
	var offset float32
	if half {
		offset = 0.5
	}
	x := float32(float32(v)+offset) * scale
	var o int
	if align {
		o = int(math.Round(float64(x)))
	} else {
		o = int(math.Floor(float64(x)))
	}
	o = min(o, inSize-1)
	if half {
		o = max(o, 0)
	}
	return o
}

func prepResizeNearest(p *opPrep) (kernel, error) {
	in, out, ih, iw, oh, ow, err := resizeGeometry(p)
	if err != nil {
		return nil, err
	}
	align, half, err := resizeFlags(p, optResizeNearestNeighbor, 0, 1)
	if err != nil {
		return nil, err
	}
	batches, depth := in.shape[0], in.shape[3]
	tab := make([]int32, 0, out.n)
	for b := 0; b < batches; b++ {
		for y := 0; y < oh; y++ {
			sy := nearest(y, ih, oh, align, half)
			for x := 0; x < ow; x++ {
				sx := nearest(x, iw, ow, align, half)
				base := ((b*ih+sy)*iw + sx) * depth
				for c := 0; c < depth; c++ {
					tab = append(tab, int32(base+c))
				}
			}
		}
	}
	return tableOp(in, out, tab)
}

// bilinearTap is one output pixel's interpolation: the four input pixel
// offsets (y0x0, y1x0, y0x1, y1x1) and the weights.
type bilinearTap struct {
	off    [4]int32
	dy, dx float32 // float: input_y - y0, input_x - x0
	wy, wx int64   // integer: input_y - 1024*y0, input_x - 1024*x0
}

func prepResizeBilinear(p *opPrep) (kernel, error) {
	in, out, ih, iw, oh, ow, err := resizeGeometry(p)
	if err != nil {
		return nil, err
	}
	align, half, err := resizeFlags(p, optResizeBilinear, 2, 3)
	if err != nil {
		return nil, err
	}
	if err := sameQuant(in, out); err != nil {
		return nil, err
	}
	batches, depth := in.shape[0], in.shape[3]
	integer := in.typ == tInt8 || in.typ == tInt16
	switch in.typ {
	case tFloat32, tUint8, tInt8:
	default:
		return nil, unsupported("input %s has type %s", in, in.typ)
	}
	// Per output row and column: the two input coordinates and weights.
	type coord struct {
		lo, hi int
		d      float32
		w      int64
	}
	axis := func(inSize, outSize int) []coord {
		cs := make([]coord, outSize)
		if integer {
			scale := int64((1<<10)*inSize+outSize/2) / int64(outSize)
			if align && outSize > 1 {
				scale = int64((1<<10)*(inSize-1)+(outSize-1)/2) / int64(outSize-1)
			}
			for v := range cs {
				s := int64(v) * scale
				if half {
					s += scale/2 - (1 << 9)
				}
				lo := max(s/(1<<10), 0) // C++ division truncates, as Go's does
				hi := min((s+(1<<10)-1)/(1<<10), int64(inSize-1))
				cs[v] = coord{lo: int(lo), hi: int(hi), w: s - (1<<10)*lo}
			}
			return cs
		}
		scale := float32(inSize) / float32(outSize)
		if align && outSize > 1 {
			scale = float32(inSize-1) / float32(outSize-1)
		}
		for v := range cs {
			var s float32
			if half {
				s = float32(float32(float32(v)+0.5)*scale) - 0.5
			} else {
				s = float32(v) * scale
			}
			lo := max(int(float32(math.Floor(float64(s)))), 0)
			hi := min(int(float32(math.Ceil(float64(s)))), inSize-1)
			cs[v] = coord{lo: lo, hi: hi, d: s - float32(lo)}
		}
		return cs
	}
	ys, xs := axis(ih, oh), axis(iw, ow)
	taps := make([]bilinearTap, 0, batches*oh*ow)
	for b := 0; b < batches; b++ {
		for _, y := range ys {
			for _, x := range xs {
				px := func(yy, xx int) int32 { return int32(((b*ih+yy)*iw + xx) * depth) }
				taps = append(taps, bilinearTap{
					off: [4]int32{px(y.lo, x.lo), px(y.hi, x.lo), px(y.lo, x.hi), px(y.hi, x.hi)},
					dy:  y.d, dx: x.d, wy: y.w, wx: x.w,
				})
			}
		}
	}
	ii, oi := in.index, out.index
	switch in.typ {
	case tFloat32:
		return func(ex *executor) error {
			x, y := ex.v.f32[ii], ex.v.f32[oi]
			for t, tp := range taps {
				o := y[t*depth : (t+1)*depth]
				for c := range o {
					o[c] = bilinearFloat(x, tp, c)
				}
			}
			return nil
		}, nil
	case tUint8:
		// The reference's template converts the float interpolation to
		// uint8 by truncation.
		return func(ex *executor) error {
			x, y := ex.v.u8[ii], ex.v.u8[oi]
			var f [4]float32
			for t, tp := range taps {
				o := y[t*depth : (t+1)*depth]
				for c := range o {
					for k := range f {
						f[k] = float32(x[int(tp.off[k])+c])
					}
					o[c] = uint8(bilinear4(f, tp.dy, tp.dx))
				}
			}
			return nil
		}, nil
	}
	return func(ex *executor) error {
		x, y := ex.v.i8[ii], ex.v.i8[oi]
		for t, tp := range taps {
			o := y[t*depth : (t+1)*depth]
			ly, lx := (1<<10)-tp.wy, (1<<10)-tp.wx
			for c := range o {
				v := int64(x[int(tp.off[0])+c])*ly*lx +
					int64(x[int(tp.off[1])+c])*tp.wy*lx +
					int64(x[int(tp.off[2])+c])*ly*tp.wx +
					int64(x[int(tp.off[3])+c])*tp.wy*tp.wx
				round := int64(1 << 19)
				if v <= 0 {
					round = -round
				}
				o[c] = int8((v + round) / (1 << 20))
			}
		}
		return nil
	}, nil
}

func bilinearFloat(x []float32, tp bilinearTap, c int) float32 {
	return bilinear4([4]float32{x[int(tp.off[0])+c], x[int(tp.off[1])+c], x[int(tp.off[2])+c], x[int(tp.off[3])+c]}, tp.dy, tp.dx)
}

// bilinear4 is the reference's interpolation, evaluated in its order and
// rounded at every step (no fused multiply-adds).
func bilinear4(v [4]float32, dy, dx float32) float32 {
	a := float32(float32(v[0]*(1-dy)) * (1 - dx))
	b := float32(float32(v[1]*dy) * (1 - dx))
	c := float32(float32(v[2]*(1-dy)) * dx)
	d := float32(float32(v[3]*dy) * dx)
	return float32(float32(a+b)+c) + d
}
