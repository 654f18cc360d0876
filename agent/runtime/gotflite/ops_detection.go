package gotflite

import (
	"errors"
	"math"
)

// TFLite_Detection_PostProcess, the custom operator that ends SSD detection
// models (TF Object Detection API exports): it decodes box encodings
// against anchors, runs non-maximum suppression (class-agnostic "fast" NMS
// or per-class "regular" NMS) and writes the best detections.
//
// It follows TFLite's kernel (tensorflow/lite/kernels/detection_postprocess.cc)
// step for step, including its orders of evaluation, so that the selected
// detections, their classes and their order match the official interpreter:
//
//   - scores below nms_score_threshold are dropped (score >= threshold is
//     kept); the rest are sorted by a stable descending sort, so equal scores
//     (common with quantized scores) keep anchor order;
//   - a candidate is suppressed when its IoU with a selected box is strictly
//     greater than nms_iou_threshold;
//   - a box's best class is the first of its highest scores; regular NMS
//     merges each class's survivors into the running top max_detections,
//     equal scores in the order they were merged (earlier classes first),
//     which is what the official interpreter does (the reference source
//     uses std::partial_sort there, whose order among equal scores the C++
//     standard leaves open: GNU libstdc++'s heap select would order them
//     differently);
//   - slots past num_detections are zero (the reference leaves the fast
//     path's unfilled slots untouched).
//
// Inputs are box encodings [1, anchors, >=4], class scores [1, anchors,
// classes (+1 background)] and anchors [anchors, 4] in center-size form
// (y, x, h, w). Box encodings and anchors are both float32 or both
// uint8/int8; class scores are float32, uint8 or int8. Quantized inputs are
// dequantized as the reference does. Outputs are float32: boxes
// [1, D, 4] (ymin, xmin, ymax, xmax), classes [1, D], scores [1, D] and
// num_detections [1], with D = max_detections * max_classes_per_detection.

func init() {
	customOps["TFLite_Detection_PostProcess"] = prepDetectionPostProcess
}

// detectionOptions are the operator's attributes (its FlexBuffer map).
type detectionOptions struct {
	maxDetections          int
	maxClassesPerDetection int
	detectionsPerClass     int
	regularNMS             bool
	scoreThreshold         float32
	iouThreshold           float32
	scaleY, scaleX         float32
	scaleH, scaleW         float32
	numClasses             int
}

// maxDetectionSlots bounds max_detections * max_classes_per_detection.
const maxDetectionSlots = 1 << 16

// parseDetectionOptions reads the custom options, with the reference's
// defaults: detections_per_class 100 and use_regular_nms false when absent
// (the converter omits detections_per_class); the other keys are required.
func parseDetectionOptions(b []byte) (detectionOptions, error) {
	var o detectionOptions
	root, err := flexRoot(b)
	if err != nil {
		return o, err
	}
	get := func(key string, required bool) (flexRef, error) {
		v, err := root.lookup(key)
		if err != nil {
			return v, err
		}
		if required && v.isNull() {
			return v, errors.New("option " + key + " is missing")
		}
		return v, nil
	}
	ints := []struct {
		key      string
		dst      *int
		required bool
		def      int
	}{
		{"max_detections", &o.maxDetections, true, 0},
		{"max_classes_per_detection", &o.maxClassesPerDetection, true, 0},
		{"detections_per_class", &o.detectionsPerClass, false, 100},
		{"num_classes", &o.numClasses, true, 0},
	}
	for _, f := range ints {
		v, err := get(f.key, f.required)
		if err != nil {
			return o, err
		}
		if v.isNull() {
			*f.dst = f.def
			continue
		}
		n, err := v.asInt32()
		if err != nil {
			return o, errors.New("option " + f.key + ": " + err.Error())
		}
		*f.dst = int(n)
	}
	floats := []struct {
		key string
		dst *float32
	}{
		{"nms_score_threshold", &o.scoreThreshold},
		{"nms_iou_threshold", &o.iouThreshold},
		{"y_scale", &o.scaleY},
		{"x_scale", &o.scaleX},
		{"h_scale", &o.scaleH},
		{"w_scale", &o.scaleW},
	}
	for _, f := range floats {
		v, err := get(f.key, true)
		if err != nil {
			return o, err
		}
		if *f.dst, err = v.asFloat(); err != nil {
			return o, errors.New("option " + f.key + ": " + err.Error())
		}
	}
	v, err := get("use_regular_nms", false)
	if err != nil {
		return o, err
	}
	if o.regularNMS, err = v.asBool(); err != nil {
		return o, errors.New("option use_regular_nms: " + err.Error())
	}
	return o, o.check()
}

// check rejects options the reference kernel would fail on at every run
// (and sizes that could not be allocated).
func (o *detectionOptions) check() error {
	switch {
	case o.maxDetections < 0:
		return errors.New("max_detections is negative")
	case o.maxClassesPerDetection <= 0:
		return errors.New("max_classes_per_detection must be positive")
	case o.regularNMS && o.detectionsPerClass <= 0:
		return errors.New("detections_per_class must be positive")
	case o.numClasses <= 0:
		return errors.New("num_classes must be positive")
	case !(o.iouThreshold > 0 && o.iouThreshold <= 1):
		return errors.New("nms_iou_threshold must be in (0, 1]")
	case int64(o.maxDetections)*int64(o.maxClassesPerDetection) > maxDetectionSlots:
		return errors.New("max_detections * max_classes_per_detection is too large")
	}
	return nil
}

// detection is a prepared TFLite_Detection_PostProcess.
type detection struct {
	detectionOptions
	boxes, classes, anchors *tinfo
	outBoxes, outClasses    *tinfo
	outScores, outNum       *tinfo
	numBoxes, boxStride     int
	classesBG, labelOffset  int

	// Dequantization of quantized inputs.
	boxScale, anchorScale, classScale float32
	boxZero, anchorZero, classZero    int32

	// Layout of the executor's float32 and int32 scratch.
	fDecoded, fScores, fClass, fKeep, fAfter, fSorted, fLen int
	iKeep, iSorted, iTmp, iSelected, iActive, iAfter        int
	iClassIdx, iLen                                         int
}

func prepDetectionPostProcess(p *opPrep) (kernel, error) {
	if err := p.arity(3, 3, 4); err != nil {
		return nil, err
	}
	opts, err := parseDetectionOptions(p.op.customBytes)
	if err != nil {
		return nil, bad("custom options: %v", err)
	}
	d := &detection{detectionOptions: opts, boxes: p.ins[0], classes: p.ins[1], anchors: p.ins[2],
		outBoxes: p.outs[0], outClasses: p.outs[1], outScores: p.outs[2], outNum: p.outs[3]}
	if len(d.boxes.shape) != 3 || len(d.classes.shape) != 3 || len(d.anchors.shape) != 2 {
		return nil, bad("input ranks are %d, %d and %d, want 3, 3 and 2", len(d.boxes.shape), len(d.classes.shape), len(d.anchors.shape))
	}
	d.numBoxes, d.boxStride = d.boxes.shape[1], d.boxes.shape[2]
	d.classesBG = d.classes.shape[2]
	switch {
	case d.boxes.shape[0] != 1 || d.classes.shape[0] != 1:
		return nil, unsupported("batch size %d, only 1 is supported", max(d.boxes.shape[0], d.classes.shape[0]))
	case d.boxStride < 4:
		return nil, bad("box encodings %s have %d values per box, want at least 4", d.boxes, d.boxStride)
	case d.classes.shape[1] != d.numBoxes:
		return nil, bad("class predictions %s have %d boxes, box encodings have %d", d.classes, d.classes.shape[1], d.numBoxes)
	case d.anchors.shape[0] != d.numBoxes || d.anchors.shape[1] != 4:
		return nil, bad("anchors %s have shape %v, want [%d 4]", d.anchors, d.anchors.shape, d.numBoxes)
	case d.classesBG < d.numClasses || d.classesBG-d.numClasses > 1:
		return nil, bad("class predictions have %d classes, want num_classes %d (plus at most one background class)", d.classesBG, d.numClasses)
	}
	d.labelOffset = d.classesBG - d.numClasses
	if err := d.prepInputTypes(); err != nil {
		return nil, err
	}
	slots := d.maxDetections * d.maxClassesPerDetection
	for i, want := range [][]int{{1, slots, 4}, {1, slots}, {1, slots}, {1}} {
		t := p.outs[i]
		if err := types(t, "output", tFloat32); err != nil {
			return nil, err
		}
		// The operator sizes its outputs, whatever the file says.
		t.shape, t.sig, t.n = want, shape64(want), numElements(want)
	}
	d.layout()
	p.needScratch(d.iLen)
	p.needFloatScratch(d.fLen)
	return d.run, nil
}

// prepInputTypes checks the input types and reads quantization parameters.
func (d *detection) prepInputTypes() error {
	var err error
	switch d.boxes.typ {
	case tFloat32:
		if err := types(d.anchors, "anchors", tFloat32); err != nil {
			return err
		}
	case tUint8, tInt8:
		if err := types(d.anchors, "anchors", tUint8, tInt8); err != nil {
			return err
		}
		if d.boxScale, d.boxZero, err = perTensor(d.boxes, "box encodings"); err != nil {
			return err
		}
		if d.anchorScale, d.anchorZero, err = perTensor(d.anchors, "anchors"); err != nil {
			return err
		}
	default:
		return unsupported("box encodings %s have type %s, want FLOAT32, UINT8 or INT8", d.boxes, d.boxes.typ)
	}
	switch d.classes.typ {
	case tFloat32:
	case tUint8, tInt8:
		if d.classScale, d.classZero, err = perTensor(d.classes, "class predictions"); err != nil {
			return err
		}
	default:
		return unsupported("class predictions %s have type %s, want FLOAT32, UINT8 or INT8", d.classes, d.classes.typ)
	}
	return nil
}

// layout places the kernel's temporaries in the executor's scratch.
func (d *detection) layout() {
	n, md := d.numBoxes, d.maxDetections
	f := 0
	take := func(at *int, size int, total *int) { *at = *total; *total += size }
	take(&d.fDecoded, 4*n, &f)
	take(&d.fScores, n*d.classesBG, &f) // dequantized class scores
	take(&d.fClass, n, &f)              // one class's (or the best) scores
	take(&d.fKeep, n, &f)               // scores above the threshold
	take(&d.fAfter, n+md, &f)           // regular NMS: running top scores
	take(&d.fSorted, md, &f)
	d.fLen = f
	i := 0
	take(&d.iKeep, n, &i)
	take(&d.iSorted, n+md, &i)
	take(&d.iTmp, max(n+md, d.numClasses), &i)
	take(&d.iSelected, n, &i)
	take(&d.iActive, n, &i)
	take(&d.iAfter, n+md, &i)
	take(&d.iClassIdx, n*d.numClasses, &i)
	d.iLen = i
}

// errInvalidBoxes is the run-time failure the reference reports when a
// decoded box has ymin > ymax or xmin > xmax (a negative anchor size).
var errInvalidBoxes = errors.New("gotflite: TFLite_Detection_PostProcess: a decoded box has min > max (negative anchor height or width)")

func (d *detection) run(ex *executor) error {
	fs, is := ex.fscratch, ex.scratch
	decoded := fs[d.fDecoded : d.fDecoded+4*d.numBoxes]
	d.decode(ex, decoded)
	for i := 0; i < d.numBoxes; i++ {
		b := decoded[4*i : 4*i+4]
		if b[0] > b[2] || b[1] > b[3] {
			return errInvalidBoxes
		}
	}
	scores := d.scores(ex, fs[d.fScores:d.fScores+d.numBoxes*d.classesBG])
	ob, oc, os := ex.v.f32[d.outBoxes.index], ex.v.f32[d.outClasses.index], ex.v.f32[d.outScores.index]
	clear(ob)
	clear(oc)
	clear(os)
	var n int
	if d.regularNMS {
		n = d.regular(fs, is, decoded, scores, ob, oc, os)
	} else {
		n = d.fast(fs, is, decoded, scores, ob, oc, os)
	}
	ex.v.f32[d.outNum.index][0] = float32(n)
	return nil
}

// dequant returns (x - zero) * scale in float32, as the reference's
// Dequantizer does.
func dequant(x int32, zero int32, scale float32) float32 {
	return (float32(x) - float32(zero)) * scale
}

// decode writes each box's corners (ymin, xmin, ymax, xmax), computed in
// float64 and rounded to float32 as the reference does.
func (d *detection) decode(ex *executor, out []float32) {
	var ycode, xcode, hcode, wcode, ay, ax, ah, aw float32
	for i := 0; i < d.numBoxes; i++ {
		o := i * d.boxStride
		switch d.boxes.typ {
		case tFloat32:
			b, a := ex.v.f32[d.boxes.index][o:o+4], ex.v.f32[d.anchors.index][4*i:4*i+4]
			ycode, xcode, hcode, wcode = b[0], b[1], b[2], b[3]
			ay, ax, ah, aw = a[0], a[1], a[2], a[3]
		default:
			var b, a [4]int32
			for k := 0; k < 4; k++ {
				b[k] = d.quantAt(ex, d.boxes, o+k)
				a[k] = d.quantAt(ex, d.anchors, 4*i+k)
			}
			ycode, xcode = dequant(b[0], d.boxZero, d.boxScale), dequant(b[1], d.boxZero, d.boxScale)
			hcode, wcode = dequant(b[2], d.boxZero, d.boxScale), dequant(b[3], d.boxZero, d.boxScale)
			ay, ax = dequant(a[0], d.anchorZero, d.anchorScale), dequant(a[1], d.anchorZero, d.anchorScale)
			ah, aw = dequant(a[2], d.anchorZero, d.anchorScale), dequant(a[3], d.anchorZero, d.anchorScale)
		}
		// Explicit float64 roundings keep the compiler from fusing
		// multiply-adds, which the reference does not do.
		yc := float32(float64(float64(ycode)/float64(d.scaleY)*float64(ah)) + float64(ay))
		xc := float32(float64(float64(xcode)/float64(d.scaleX)*float64(aw)) + float64(ax))
		hh := float32(0.5 * math.Exp(float64(hcode)/float64(d.scaleH)) * float64(ah))
		hw := float32(0.5 * math.Exp(float64(wcode)/float64(d.scaleW)) * float64(aw))
		b := out[4*i : 4*i+4]
		b[0], b[1], b[2], b[3] = yc-hh, xc-hw, yc+hh, xc+hw
	}
}

// quantAt reads element i of a uint8 or int8 tensor.
func (d *detection) quantAt(ex *executor, t *tinfo, i int) int32 {
	if t.typ == tUint8 {
		return int32(ex.v.u8[t.index][i])
	}
	return int32(ex.v.i8[t.index][i])
}

// scores returns the class scores as float32: the input itself, or its
// dequantization in buf. The reference dequantizes with TFLite's optimised
// Dequantize, which (on NEON and, through NEON_2_SSE, x86 builds) works
// eight elements at a time in float32 as x * scale + (-zero * scale), and
// the remaining len % 8 in float64 as scale * (x - zero), rounded to
// float32. The forms differ in the last bit for some x, and that bit
// decides the order of otherwise equal scores.
func (d *detection) scores(ex *executor, buf []float32) []float32 {
	var at func(i int) int32
	switch d.classes.typ {
	case tUint8:
		x := ex.v.u8[d.classes.index]
		at = func(i int) int32 { return int32(x[i]) }
	case tInt8:
		x := ex.v.i8[d.classes.index]
		at = func(i int) int32 { return int32(x[i]) }
	default:
		return ex.v.f32[d.classes.index]
	}
	n := len(buf)
	simd := n - n%8
	zs := float32(-float64(d.classZero) * float64(d.classScale))
	for i := 0; i < simd; i++ {
		// The conversion rounds the product: no fused multiply-add.
		buf[i] = float32(float32(at(i))*d.classScale) + zs
	}
	for i := simd; i < n; i++ {
		buf[i] = float32(float64(d.classScale) * float64(at(i)-d.classZero))
	}
	return buf
}

// iou is the intersection over union of two decoded boxes, 0 when either
// has no area, in float32 as the reference computes it.
func iou(a, b []float32) float32 {
	areaA := (a[2] - a[0]) * (a[3] - a[1])
	areaB := (b[2] - b[0]) * (b[3] - b[1])
	if areaA <= 0 || areaB <= 0 {
		return 0
	}
	ih := stdMin(a[2], b[2]) - stdMax(a[0], b[0])
	iw := stdMin(a[3], b[3]) - stdMax(a[1], b[1])
	inter := stdMax(ih, 0) * stdMax(iw, 0)
	return inter / (areaA + areaB - inter)
}

// nmsSingle selects, from boxes whose score is at least the threshold, at
// most maxDet boxes by greedy non-maximum suppression in decreasing score
// order. It writes the selected box indices to selected and returns their
// count.
func (d *detection) nmsSingle(fs []float32, is []int32, decoded, scores []float32, maxDet int, selected []int32) int {
	keepIdx := is[d.iKeep : d.iKeep+d.numBoxes]
	keepScores := fs[d.fKeep : d.fKeep+d.numBoxes]
	kept := 0
	for i, s := range scores[:d.numBoxes] {
		if s >= d.scoreThreshold {
			keepScores[kept], keepIdx[kept] = s, int32(i)
			kept++
		}
	}
	order := is[d.iSorted : d.iSorted+kept]
	stableArgSortDesc(order, is[d.iTmp:d.iTmp+kept], keepScores[:kept])
	outSize := min(kept, maxDet)
	active := is[d.iActive : d.iActive+kept]
	for i := range active {
		active[i] = 1
	}
	numActive, n := kept, 0
	for i := 0; i < kept; i++ {
		if numActive == 0 || n >= outSize {
			break
		}
		if active[i] == 0 {
			continue
		}
		bi := int(keepIdx[order[i]])
		selected[n] = int32(bi)
		n++
		active[i] = 0
		numActive--
		boxI := decoded[4*bi : 4*bi+4]
		for j := i + 1; j < kept; j++ {
			if active[j] == 0 {
				continue
			}
			bj := int(keepIdx[order[j]])
			if iou(boxI, decoded[4*bj:4*bj+4]) > d.iouThreshold {
				active[j] = 0
				numActive--
			}
		}
	}
	return n
}

// fast is the class-agnostic NMS: each box competes with its best class
// score, and keeps its top max_classes_per_detection classes.
func (d *detection) fast(fs []float32, is []int32, decoded, scores, ob, oc, os []float32) int {
	cats := min(d.maxClassesPerDetection, d.numClasses)
	best := fs[d.fClass : d.fClass+d.numBoxes]
	classIdx := is[d.iClassIdx : d.iClassIdx+d.numBoxes*d.numClasses]
	for row := 0; row < d.numBoxes; row++ {
		bs := scores[row*d.classesBG+d.labelOffset : row*d.classesBG+d.labelOffset+d.numClasses]
		ci := classIdx[row*d.numClasses : (row+1)*d.numClasses]
		decreasingPartialArgSort(bs, cats, ci, is[d.iTmp:d.iTmp+d.numClasses])
		best[row] = bs[ci[0]]
	}
	selected := is[d.iSelected : d.iSelected+d.numBoxes]
	n := d.nmsSingle(fs, is, decoded, best, d.maxDetections, selected)
	for k, bi := range selected[:n] {
		bs := scores[int(bi)*d.classesBG+d.labelOffset:]
		ci := classIdx[int(bi)*d.numClasses:]
		for col := 0; col < cats; col++ {
			slot := d.maxClassesPerDetection*k + col
			copy(ob[4*slot:4*slot+4], decoded[4*bi:4*bi+4])
			oc[slot] = float32(ci[col])
			os[slot] = bs[ci[col]]
		}
	}
	return n
}

// regular is the per-class NMS: each class keeps at most
// detections_per_class boxes, and the best max_detections of all classes
// are kept as they are merged class by class.
func (d *detection) regular(fs []float32, is []int32, decoded, scores, ob, oc, os []float32) int {
	md := d.maxDetections
	classScores := fs[d.fClass : d.fClass+d.numBoxes]
	afterIdx := is[d.iAfter : d.iAfter+d.numBoxes+md]
	afterScores := fs[d.fAfter : d.fAfter+d.numBoxes+md]
	sortedVals := fs[d.fSorted : d.fSorted+md]
	selected := is[d.iSelected : d.iSelected+d.numBoxes]
	// The merge sorts in iTmp with iSorted as merge space: nmsSingle's
	// sort space, free again once it returns.
	size := 0
	for col := 0; col < d.numClasses; col++ {
		for row := 0; row < d.numBoxes; row++ {
			classScores[row] = scores[row*d.classesBG+col+d.labelOffset]
		}
		n := d.nmsSingle(fs, is, decoded, classScores, d.detectionsPerClass, selected)
		out := size
		for _, bi := range selected[:n] {
			afterIdx[out] = bi*int32(d.classesBG) + int32(col+d.labelOffset)
			afterScores[out] = classScores[bi]
			out++
		}
		k := min(out, md)
		sorted := is[d.iTmp : d.iTmp+out]
		decreasingPartialArgSort(afterScores[:out], k, sorted, is[d.iSorted:d.iSorted+out])
		for r := 0; r < k; r++ {
			t := sorted[r]
			sorted[r] = afterIdx[t]
			sortedVals[r] = afterScores[t]
		}
		for r := 0; r < k; r++ {
			afterIdx[r] = sorted[r]
			afterScores[r] = sortedVals[r]
		}
		size = k
	}
	for k := 0; k < size; k++ {
		anchor := int(afterIdx[k]) / d.classesBG
		class := int(afterIdx[k]) - anchor*d.classesBG - d.labelOffset
		copy(ob[4*k:4*k+4], decoded[4*anchor:4*anchor+4])
		oc[k] = float32(class)
		os[k] = afterScores[k]
	}
	return size
}

// stableArgSortDesc fills idx with 0..len(vals)-1 ordered by decreasing
// value, equal values in index order (std::stable_sort with ">"), using tmp
// as merge space: a bottom-up merge sort, allocation-free.
func stableArgSortDesc(idx, tmp []int32, vals []float32) {
	n := len(vals)
	for i := range idx[:n] {
		idx[i] = int32(i)
	}
	src, dst := idx[:n], tmp[:n]
	for width := 1; width < n; width *= 2 {
		for lo := 0; lo < n; lo += 2 * width {
			mid, hi := min(lo+width, n), min(lo+2*width, n)
			i, j, k := lo, mid, lo
			for i < mid && j < hi {
				// Take from the right only when strictly greater.
				if vals[src[j]] > vals[src[i]] {
					dst[k] = src[j]
					j++
				} else {
					dst[k] = src[i]
					i++
				}
				k++
			}
			k += copy(dst[k:], src[i:mid])
			copy(dst[k:], src[j:hi])
		}
		src, dst = dst, src
	}
	if n > 0 && &src[0] != &idx[0] {
		copy(idx[:n], src)
	}
}

// decreasingPartialArgSort writes to idx[:k] the indices of the k largest
// values in decreasing order, equal values in index order; idx and tmp have
// len(values) elements. The reference's DecreasingPartialArgSort takes the
// first maximum for k == 1 and otherwise calls std::partial_sort, which
// leaves the order of equal values to the C++ library; the official
// interpreter's results (checked on quantized scores with many ties) match
// index order, so that is the order here.
func decreasingPartialArgSort(values []float32, k int, idx, tmp []int32) {
	n := len(values)
	if n == 0 {
		return
	}
	if k == 1 {
		best := 0
		for i := 1; i < n; i++ {
			if values[i] > values[best] {
				best = i
			}
		}
		idx[0] = int32(best)
		return
	}
	stableArgSortDesc(idx[:n], tmp[:n], values)
}

// stdMax and stdMin are std::max and std::min, whose results with a NaN
// operand differ from Go's max and min.
func stdMax(a, b float32) float32 {
	if a < b {
		return b
	}
	return a
}

func stdMin(a, b float32) float32 {
	if b < a {
		return b
	}
	return a
}
