package kernels

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// refRequant is TFLite's MultiplyByQuantizedMultiplier written as the
// reference states it (nudged, truncating division; rounding division by a
// power of two), independently of requantGo.
func refRequant(acc, m int32, shift int, zero, lo, hi int32) int8 {
	left, right := 0, 0
	if shift > 0 {
		left = shift
	} else {
		right = -shift
	}
	x := acc * (1 << left)
	var h int32
	if x == math.MinInt32 && m == math.MinInt32 {
		h = math.MaxInt32
	} else {
		ab := int64(x) * int64(m)
		nudge := int64(1 << 30)
		if ab < 0 {
			nudge = 1 - (1 << 30)
		}
		h = int32((ab + nudge) / (1 << 31))
	}
	if right > 31 {
		right = 31
	}
	if right > 0 {
		mask := int32(int64(1)<<right - 1)
		rem := h & mask
		th := mask >> 1
		if h < 0 {
			th++
		}
		h >>= right
		if rem > th {
			h++
		}
	}
	return int8(min(max(h+zero, lo), hi))
}

func randRequant(r *rand.Rand, n int) Requant {
	rq := Requant{Mult: make([]int32, n), Shift: make([]int, n), OutZero: int32(r.IntN(256) - 128), Lo: -128, Hi: 127}
	for i := range n {
		rq.Mult[i] = int32(1<<30 + r.IntN(1<<30))
		rq.Shift[i] = r.IntN(12) - 10 // mostly right shifts, as real models have
	}
	if r.IntN(2) == 0 {
		rq.Lo = max(-128, rq.OutZero) // a ReLU
	}
	return rq
}

func randInt8(r *rand.Rand, n int) []int8 {
	s := make([]int8, n)
	for i := range s {
		s[i] = int8(r.IntN(256) - 128)
	}
	return s
}

func randInt32(r *rand.Rand, n, span int) []int32 {
	s := make([]int32, n)
	for i := range s {
		s[i] = int32(r.IntN(2*span) - span)
	}
	return s
}

// refConvInt8 is the reference int8 convolution: taps outside the input
// are skipped, every other term is filter x (input - zero point).
func refConvInt8(p ConvParams, inZero int32, x, filter []int8, bias []int32, rq Requant, depthwise bool) []int8 {
	y := make([]int8, p.outLen())
	for b := 0; b < p.Batches; b++ {
		for oy := 0; oy < p.OutH; oy++ {
			for ox := 0; ox < p.OutW; ox++ {
				for oc := 0; oc < p.OutC; oc++ {
					var acc int32
					for fy := 0; fy < p.KH; fy++ {
						iy := oy*p.StrideH - p.PadH + fy*p.DilH
						for fx := 0; fx < p.KW; fx++ {
							ix := ox*p.StrideW - p.PadW + fx*p.DilW
							if iy < 0 || iy >= p.InH || ix < 0 || ix >= p.InW {
								continue
							}
							in := x[((b*p.InH+iy)*p.InW+ix)*p.InC:]
							if depthwise {
								acc += int32(filter[(fy*p.KW+fx)*p.OutC+oc]) * (int32(in[oc]) - inZero)
								continue
							}
							f := filter[((oc*p.KH+fy)*p.KW+fx)*p.InC:]
							for ci := 0; ci < p.InC; ci++ {
								acc += int32(f[ci]) * (int32(in[ci]) - inZero)
							}
						}
					}
					if bias != nil {
						acc += bias[oc]
					}
					y[((b*p.OutH+oy)*p.OutW+ox)*p.OutC+oc] = refRequant(acc, rq.Mult[oc], rq.Shift[oc], rq.OutZero, rq.Lo, rq.Hi)
				}
			}
		}
	}
	return y
}

func checkEqualInt8(t *testing.T, what string, got, want []int8) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: output %d = %d, want %d", what, i, got[i], want[i])
		}
	}
}

func TestRequantMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	accs := []int32{0, 1, -1, 2, -2, 1 << 20, -(1 << 20), math.MaxInt32, math.MinInt32, math.MinInt32 + 1}
	for range 2000 {
		accs = append(accs, int32(r.Uint32()), int32(r.IntN(1<<16)-1<<15))
	}
	shifts := []int{-31, -40, -20, -8, -1, 0, 1, 3, 31, 32}
	mults := []int32{0, 1 << 30, 1<<31 - 1, 1518500250}
	for _, sh := range shifts {
		for _, m := range mults {
			rq := Requant{Mult: []int32{m}, Shift: []int{sh}, OutZero: -5, Lo: -128, Hi: 127}
			bs := makeBlocks(&rq, nil, 1)
			for _, a := range accs {
				want := refRequant(a, m, sh, -5, -128, 127)
				if got := requantGo(a, &bs[0], 0); got != want {
					t.Fatalf("requantGo(%d, m=%d, shift=%d) = %d, want %d", a, m, sh, got, want)
				}
			}
		}
	}
}

// TestRequantVectorMatchesReference drives the assembly output stage
// through a depthwise 1x1 layer with unit weights and chosen biases, so
// every sum the stage sees is known.
func TestRequantVectorMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	const ch = 24
	for trial := range 200 {
		rq := randRequant(r, ch)
		for i := range ch {
			rq.Shift[i] = []int{-31, -20, -8, -1, 0, 1, 3, 31}[r.IntN(8)]
			if r.IntN(5) == 0 {
				rq.Mult[i] = []int32{0, 1 << 30, 1<<31 - 1}[r.IntN(3)]
			}
		}
		bias := make([]int32, ch)
		for i := range bias {
			bias[i] = int32(r.Uint32())
		}
		if trial%2 == 0 {
			for i := range bias {
				bias[i] = int32(r.IntN(1<<14) - 1<<13)
			}
		}
		p := ConvParams{Batches: 1, InH: 1, InW: 1, InC: ch, OutH: 1, OutW: 1, OutC: ch, KH: 1, KW: 1,
			StrideH: 1, StrideW: 1, DilH: 1, DilW: 1}
		d, err := NewDepthwiseInt8(p, 0, make([]int8, ch), bias, rq)
		if err != nil {
			t.Fatal(err)
		}
		y := make([]int8, ch)
		d.Run(make([]int8, ch), y, 0, 1)
		for c := range ch {
			if want := refRequant(bias[c], rq.Mult[c], rq.Shift[c], rq.OutZero, rq.Lo, rq.Hi); y[c] != want {
				t.Fatalf("trial %d channel %d: sum %d, m=%d, shift=%d: got %d, want %d", trial, c, bias[c], rq.Mult[c], rq.Shift[c], y[c], want)
			}
		}
	}
}

var convInt8Cases = []struct {
	name string
	p    ConvParams
}{
	{"1x1 one pixel one channel", geometry(1, 1, 1, 1, 1, 1, 1, 1, false)},
	{"1x1 tails", geometry(1, 5, 7, 13, 21, 1, 1, 1, false)},
	{"1x1 exact tiles", geometry(1, 4, 4, 32, 32, 1, 1, 1, false)},
	{"1x1 long rows", geometry(1, 3, 3, 960, 40, 1, 1, 1, false)},
	{"1x1 wide output, few rows", geometry(1, 2, 3, 64, 320, 1, 1, 1, false)},
	{"3x3 same stride 2 three channels", geometry(2, 15, 16, 3, 32, 3, 2, 1, true)},
	{"3x3 same stride 1 odd channels", geometry(1, 9, 11, 17, 24, 3, 1, 1, true)},
	{"3x3 dilated valid", geometry(1, 10, 9, 4, 16, 3, 1, 2, false)},
	{"3x3 dilated same odd channels", geometry(1, 9, 10, 5, 16, 3, 1, 2, true)},
	{"7x7 window larger than input", geometry(1, 3, 4, 2, 3, 7, 1, 1, true)},
	{"5x5 stride 2", geometry(1, 13, 12, 6, 24, 5, 2, 1, true)},
}

func TestConvInt8MatchesReference(t *testing.T) {
	for i, tc := range convInt8Cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			r := rand.New(rand.NewPCG(9, uint64(i)))
			inZero := int32(r.IntN(256) - 128)
			x := randInt8(r, p.inLen())
			f := randInt8(r, p.OutC*p.KH*p.KW*p.InC)
			bias := randInt32(r, p.OutC, 1<<16)
			rq := randRequant(r, p.OutC)
			want := refConvInt8(p, inZero, x, f, bias, rq, false)
			run := func() []int8 {
				c, err := NewConvInt8(p, inZero, f, bias, rq)
				if err != nil {
					t.Fatal(err)
				}
				y := make([]int8, p.outLen())
				mid := c.Units() / 2
				c.Run(x, y, 0, mid)
				c.Run(x, y, mid, c.Units())
				return y
			}
			checkEqualInt8(t, "default kernels", run(), want)
			setVNNI(false)
			avx2 := run()
			setVNNI(true)
			checkEqualInt8(t, "AVX2 kernels without VNNI", avx2, want)
			var slow []int8
			withPortable(t, func() { slow = run() })
			checkEqualInt8(t, "portable kernels", slow, want)
		})
	}
}

func TestDepthwiseInt8MatchesReference(t *testing.T) {
	cases := []struct {
		name string
		p    ConvParams
	}{
		{"3x3 same 32 channels", geometry(1, 9, 10, 32, 32, 3, 1, 1, true)},
		{"3x3 same stride 2 144 channels", geometry(1, 11, 12, 144, 144, 3, 2, 1, true)},
		{"3x3 tail channels", geometry(2, 6, 7, 21, 21, 3, 1, 1, true)},
		{"3x3 fewer than 8 channels", geometry(1, 5, 5, 3, 3, 3, 2, 1, true)},
		{"3x3 valid", geometry(1, 7, 9, 40, 40, 3, 1, 1, false)},
		{"5x5 dilated", geometry(1, 12, 11, 24, 24, 5, 1, 2, true)},
		{"window larger than input", geometry(1, 2, 3, 16, 16, 7, 1, 1, true)},
		{"one column", geometry(1, 6, 1, 9, 9, 3, 1, 1, true)},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			r := rand.New(rand.NewPCG(10, uint64(i)))
			inZero := int32(r.IntN(256) - 128)
			x := randInt8(r, p.inLen())
			f := randInt8(r, p.KH*p.KW*p.OutC)
			bias := randInt32(r, p.OutC, 1<<14)
			rq := randRequant(r, p.OutC)
			want := refConvInt8(p, inZero, x, f, bias, rq, true)
			run := func() []int8 {
				d, err := NewDepthwiseInt8(p, inZero, f, bias, rq)
				if err != nil {
					t.Fatal(err)
				}
				y := make([]int8, p.outLen())
				mid := d.Units() / 2
				d.Run(x, y, mid, d.Units())
				d.Run(x, y, 0, mid)
				return y
			}
			checkEqualInt8(t, "default kernels", run(), want)
			setVNNI(false)
			avx2 := run()
			setVNNI(true)
			checkEqualInt8(t, "AVX2 kernels without VNNI", avx2, want)
			var slow []int8
			withPortable(t, func() { slow = run() })
			checkEqualInt8(t, "portable kernels", slow, want)
		})
	}
}

func TestFullyConnectedInt8MatchesReference(t *testing.T) {
	for i, tc := range []struct{ batches, units, depth int }{
		{1, 1, 1}, {1, 7, 3}, {1, 10, 16}, {2, 9, 31}, {1, 1000, 1280}, {3, 5, 100},
	} {
		t.Run(fmt.Sprintf("%dx%dx%d", tc.batches, tc.units, tc.depth), func(t *testing.T) {
			r := rand.New(rand.NewPCG(11, uint64(i)))
			inZero, wZero := int32(r.IntN(256)-128), int32(r.IntN(9)-4)
			x := randInt8(r, tc.batches*tc.depth)
			w := randInt8(r, tc.units*tc.depth)
			bias := randInt32(r, tc.units, 1<<16)
			rq := randRequant(r, tc.units)
			want := make([]int8, tc.batches*tc.units)
			for b := range tc.batches {
				for u := range tc.units {
					acc := bias[u]
					for k := range tc.depth {
						acc += (int32(w[u*tc.depth+k]) - wZero) * (int32(x[b*tc.depth+k]) - inZero)
					}
					want[b*tc.units+u] = refRequant(acc, rq.Mult[u], rq.Shift[u], rq.OutZero, rq.Lo, rq.Hi)
				}
			}
			run := func() []int8 {
				f, err := NewFullyConnectedInt8(tc.units, tc.depth, inZero, wZero, w, bias, rq)
				if err != nil {
					t.Fatal(err)
				}
				y := make([]int8, tc.batches*tc.units)
				f.Run(x, y, 0, tc.units/2)
				f.Run(x, y, tc.units/2, tc.units)
				return y
			}
			checkEqualInt8(t, "default kernels", run(), want)
			var slow []int8
			withPortable(t, func() { slow = run() })
			checkEqualInt8(t, "portable kernels", slow, want)
		})
	}
}

func TestInt8PlansRejectBadInput(t *testing.T) {
	p := geometry(1, 4, 4, 3, 8, 3, 1, 1, true)
	rq := Requant{Mult: make([]int32, 8), Shift: make([]int, 8), Lo: -128, Hi: 127}
	f := make([]int8, 8*9*3)
	cases := []struct {
		name string
		make func() error
	}{
		{"short requant", func() error {
			_, err := NewConvInt8(p, 0, f, nil, Requant{Mult: make([]int32, 7), Shift: make([]int, 7), Lo: -128, Hi: 127})
			return err
		}},
		{"clamp outside int8", func() error {
			bad := rq
			bad.Hi = 300
			_, err := NewConvInt8(p, 0, f, nil, bad)
			return err
		}},
		{"zero point outside int8", func() error { _, err := NewConvInt8(p, 200, f, nil, rq); return err }},
		{"short filter", func() error { _, err := NewConvInt8(p, 0, f[:10], nil, rq); return err }},
		{"window too long", func() error {
			q := geometry(1, 4, 4, 600, 8, 3, 1, 1, true)
			_, err := NewConvInt8(q, 0, make([]int8, 8*9*600), nil, rq)
			return err
		}},
		{"depth multiplier", func() error { _, err := NewDepthwiseInt8(p, 0, make([]int8, 9*8), nil, rq); return err }},
		{"dense sizes", func() error { _, err := NewFullyConnectedInt8(8, 4, 0, 0, make([]int8, 31), nil, rq); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.make(); !errors.Is(err, ErrGeometry) {
				t.Fatalf("error %v, want ErrGeometry", err)
			}
		})
	}
}

func TestInt8RunAllocatesNothing(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 12))
	p := geometry(1, 14, 14, 24, 40, 3, 2, 1, true)
	x := randInt8(r, p.inLen())
	c, err := NewConvInt8(p, 3, randInt8(r, p.OutC*9*p.InC), randInt32(r, p.OutC, 100), randRequant(r, p.OutC))
	if err != nil {
		t.Fatal(err)
	}
	y := make([]int8, p.outLen())
	dp := geometry(1, 14, 14, 24, 24, 3, 1, 1, true)
	d, err := NewDepthwiseInt8(dp, -7, randInt8(r, 9*24), nil, randRequant(r, 24))
	if err != nil {
		t.Fatal(err)
	}
	dy := make([]int8, dp.outLen())
	f, err := NewFullyConnectedInt8(10, p.inLen(), 1, 0, randInt8(r, 10*p.inLen()), nil, randRequant(r, 10))
	if err != nil {
		t.Fatal(err)
	}
	fy := make([]int8, 10)
	for _, portable := range []bool{false, true} {
		run := func() {
			if n := testing.AllocsPerRun(20, func() {
				c.Run(x, y, 0, c.Units())
				d.Run(x, dy, 0, d.Units())
				f.Run(x, fy, 0, 10)
			}); n != 0 {
				t.Fatalf("portable=%v: %v allocations per run, want 0", portable, n)
			}
		}
		if portable {
			withPortable(t, run)
		} else {
			run()
		}
	}
}

// TestRQBlockLayout holds the offsets that kernels_amd64.s hard-codes.
func TestRQBlockLayout(t *testing.T) {
	var b rqBlock
	got := []uintptr{unsafe.Offsetof(b.mult), unsafe.Offsetof(b.left), unsafe.Offsetof(b.right),
		unsafe.Offsetof(b.mask), unsafe.Offsetof(b.half), unsafe.Offsetof(b.multOdd),
		unsafe.Offsetof(b.zero), unsafe.Offsetof(b.lo8), unsafe.Offsetof(b.hi8),
		unsafe.Offsetof(b.nudge), unsafe.Sizeof(b)}
	want := []uintptr{32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rqBlock offsets and size %v, want %v", got, want)
	}
}
