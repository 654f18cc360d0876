package kernels

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// withPortable runs f with the assembly kernels switched off (and back on).
// Tests that use it must not run in parallel.
func withPortable(t testing.TB, f func()) {
	t.Helper()
	saved := haveAVX2
	setAVX2(false)
	defer setAVX2(saved)
	f()
}

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// refConv is the direct convolution, accumulated in float64, with
// depthwise (filter [1][KH][KW][C]) or regular (filter [OutC][KH][KW][InC])
// weights.
func refConv(p ConvParams, x, filter, bias []float32, depthwise bool) []float64 {
	y := make([]float64, p.outLen())
	for b := 0; b < p.Batches; b++ {
		for oy := 0; oy < p.OutH; oy++ {
			for ox := 0; ox < p.OutW; ox++ {
				for oc := 0; oc < p.OutC; oc++ {
					var s float64
					if bias != nil {
						s = float64(bias[oc])
					}
					for fy := 0; fy < p.KH; fy++ {
						iy := oy*p.StrideH - p.PadH + fy*p.DilH
						for fx := 0; fx < p.KW; fx++ {
							ix := ox*p.StrideW - p.PadW + fx*p.DilW
							if iy < 0 || iy >= p.InH || ix < 0 || ix >= p.InW {
								continue
							}
							in := x[((b*p.InH+iy)*p.InW+ix)*p.InC:]
							if depthwise {
								s += float64(in[oc]) * float64(filter[(fy*p.KW+fx)*p.OutC+oc])
								continue
							}
							f := filter[((oc*p.KH+fy)*p.KW+fx)*p.InC:]
							for ci := 0; ci < p.InC; ci++ {
								s += float64(in[ci]) * float64(f[ci])
							}
						}
					}
					y[((b*p.OutH+oy)*p.OutW+ox)*p.OutC+oc] = math.Min(math.Max(s, float64(p.Lo)), float64(p.Hi))
				}
			}
		}
	}
	return y
}

// checkClose fails unless got is within a relative 1e-5 of want, scaled by
// the number of terms each output sums.
func checkClose(t *testing.T, what string, got []float32, want []float64, terms int) {
	t.Helper()
	if len(got) < len(want) {
		t.Fatalf("%s: %d outputs, want %d", what, len(got), len(want))
	}
	tol := 1e-5 * math.Sqrt(float64(terms)) * 4
	for i, w := range want {
		if d := math.Abs(float64(got[i]) - w); d > tol*math.Max(1, math.Abs(w)) || math.IsNaN(float64(got[i])) {
			t.Fatalf("%s: output %d = %v, want %v (tolerance %g)", what, i, got[i], w, tol)
		}
	}
}

// geometry derives output size and SAME-style padding for a test case.
func geometry(batches, inH, inW, inC, outC, k, stride, dil int, same bool) ConvParams {
	p := ConvParams{Batches: batches, InH: inH, InW: inW, InC: inC, OutC: outC, KH: k, KW: k,
		StrideH: stride, StrideW: stride, DilH: dil, DilW: dil}
	p.Lo, p.Hi = NoClamp()
	eff := (k-1)*dil + 1
	if same {
		p.OutH, p.OutW = (inH+stride-1)/stride, (inW+stride-1)/stride
		p.PadH = max(0, ((p.OutH-1)*stride+eff-inH)/2)
		p.PadW = max(0, ((p.OutW-1)*stride+eff-inW)/2)
	} else {
		p.OutH, p.OutW = (inH-eff+stride)/stride, (inW-eff+stride)/stride
	}
	return p
}

var convCases = []struct {
	name string
	p    ConvParams
}{
	{"1x1 one pixel one channel", geometry(1, 1, 1, 1, 1, 1, 1, 1, false)},
	{"1x1 tails in rows and columns", geometry(1, 5, 7, 13, 21, 1, 1, 1, false)},
	{"1x1 exact tiles", geometry(1, 6, 4, 16, 32, 1, 1, 1, false)},
	{"1x1 wide output", geometry(1, 2, 3, 8, 100, 1, 1, 1, false)},
	{"1x1 stride 2", geometry(2, 7, 6, 5, 18, 1, 2, 1, false)},
	{"1x1 same padding one batch after another", geometry(3, 5, 5, 4, 16, 1, 1, 1, true)},
	{"3x3 same stride 1", geometry(1, 9, 11, 5, 17, 3, 1, 1, true)},
	{"3x3 same stride 2 three channels", geometry(2, 15, 16, 3, 32, 3, 2, 1, true)},
	{"3x3 valid", geometry(1, 8, 8, 7, 9, 3, 1, 1, false)},
	{"3x3 dilated", geometry(1, 10, 9, 4, 16, 3, 1, 2, true)},
	{"5x5 stride 2", geometry(1, 13, 12, 6, 24, 5, 2, 1, true)},
	{"2x2 even window", geometry(1, 7, 7, 2, 5, 2, 1, 1, true)},
	{"7x7 window larger than input", geometry(1, 3, 4, 2, 3, 7, 1, 1, true)},
}

func TestConvMatchesReference(t *testing.T) {
	for _, tc := range convCases {
		for _, act := range []struct {
			name   string
			lo, hi float32
		}{{"none", -inf, inf}, {"relu6", 0, 6}} {
			t.Run(tc.name+"/"+act.name, func(t *testing.T) {
				p := tc.p
				p.Lo, p.Hi = act.lo, act.hi
				r := rand.New(rand.NewPCG(1, uint64(p.InC*p.OutC)))
				x := randSlice(r, p.inLen())
				f := randSlice(r, p.OutC*p.KH*p.KW*p.InC)
				bias := randSlice(r, p.OutC)
				want := refConv(p, x, f, bias, false)
				terms := p.KH * p.KW * p.InC
				c, err := NewConv(p, f, bias)
				if err != nil {
					t.Fatal(err)
				}
				run := func() []float32 {
					y := make([]float32, p.outLen())
					// Two ranges, as two threads would run them.
					mid := c.Units() / 2
					c.Run(x, y, 0, mid)
					c.Run(x, y, mid, c.Units())
					return y
				}
				fast := run()
				checkClose(t, "default kernels", fast, want, terms)
				var slow []float32
				withPortable(t, func() { slow = run() })
				checkClose(t, "portable kernels", slow, want, terms)
			})
		}
	}
}

func TestConvWithoutBias(t *testing.T) {
	p := geometry(1, 4, 5, 3, 20, 3, 1, 1, true)
	r := rand.New(rand.NewPCG(2, 2))
	x, f := randSlice(r, p.inLen()), randSlice(r, p.OutC*9*p.InC)
	c, err := NewConv(p, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	y := make([]float32, p.outLen())
	c.Run(x, y, 0, c.Units())
	checkClose(t, "no bias", y, refConv(p, x, f, nil, false), 9*p.InC)
}

func TestDepthwiseMatchesReference(t *testing.T) {
	cases := []struct {
		name string
		p    ConvParams
	}{
		{"3x3 same 32 channels", geometry(1, 9, 10, 32, 32, 3, 1, 1, true)},
		{"3x3 same stride 2 144 channels", geometry(1, 11, 12, 144, 144, 3, 2, 1, true)},
		{"3x3 tail channels", geometry(2, 6, 7, 13, 13, 3, 1, 1, true)},
		{"3x3 fewer than 8 channels", geometry(1, 5, 5, 3, 3, 3, 2, 1, true)},
		{"3x3 valid", geometry(1, 7, 9, 40, 40, 3, 1, 1, false)},
		{"5x5 dilated", geometry(1, 12, 11, 24, 24, 5, 1, 2, true)},
		{"1x1 stride 2", geometry(1, 5, 6, 8, 8, 1, 2, 1, false)},
		{"window larger than input", geometry(1, 2, 3, 16, 16, 7, 1, 1, true)},
		{"one column", geometry(1, 6, 1, 9, 9, 3, 1, 1, true)},
	}
	for _, tc := range cases {
		for _, act := range []struct {
			name   string
			lo, hi float32
		}{{"none", -inf, inf}, {"relu6", 0, 6}} {
			t.Run(tc.name+"/"+act.name, func(t *testing.T) {
				p := tc.p
				p.Lo, p.Hi = act.lo, act.hi
				r := rand.New(rand.NewPCG(3, uint64(p.InC)))
				x := randSlice(r, p.inLen())
				f := randSlice(r, p.KH*p.KW*p.OutC)
				bias := randSlice(r, p.OutC)
				want := refConv(p, x, f, bias, true)
				run := func() []float32 {
					d, err := NewDepthwise(p, f, bias)
					if err != nil {
						t.Fatal(err)
					}
					y := make([]float32, p.outLen())
					mid := d.Units() / 2
					d.Run(x, y, mid, d.Units())
					d.Run(x, y, 0, mid)
					return y
				}
				checkClose(t, "default kernels", run(), want, p.KH*p.KW)
				var slow []float32
				withPortable(t, func() { slow = run() })
				checkClose(t, "portable kernels", slow, want, p.KH*p.KW)
			})
		}
	}
}

func TestFullyConnectedMatchesReference(t *testing.T) {
	for _, tc := range []struct{ batches, units, depth int }{
		{1, 1, 1}, {1, 7, 3}, {1, 10, 8}, {2, 9, 31}, {1, 1000, 1280}, {3, 5, 100},
	} {
		t.Run(fmt.Sprintf("%dx%dx%d", tc.batches, tc.units, tc.depth), func(t *testing.T) {
			r := rand.New(rand.NewPCG(4, uint64(tc.depth)))
			x := randSlice(r, tc.batches*tc.depth)
			w := randSlice(r, tc.units*tc.depth)
			bias := randSlice(r, tc.units)
			want := make([]float64, tc.batches*tc.units)
			for b := range tc.batches {
				for u := range tc.units {
					s := float64(bias[u])
					for k := range tc.depth {
						s += float64(x[b*tc.depth+k]) * float64(w[u*tc.depth+k])
					}
					want[b*tc.units+u] = math.Max(s, 0)
				}
			}
			run := func() []float32 {
				f, err := NewFullyConnected(tc.units, tc.depth, w, bias, 0, inf)
				if err != nil {
					t.Fatal(err)
				}
				y := make([]float32, tc.batches*tc.units)
				f.Run(x, y, 0, tc.units/3)
				f.Run(x, y, tc.units/3, tc.units)
				return y
			}
			checkClose(t, "default kernels", run(), want, tc.depth)
			var slow []float32
			withPortable(t, func() { slow = run() })
			checkClose(t, "portable kernels", slow, want, tc.depth)
		})
	}
}

// TestDotTails checks every length around the vector widths against the
// portable dot product.
func TestDotTails(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	a, b := randSlice(r, 300), randSlice(r, 300)
	for n := 0; n <= 300; n++ {
		var want float64
		for i := range n {
			want += float64(a[i]) * float64(b[i])
		}
		checkClose(t, fmt.Sprintf("Dot length %d", n), []float32{Dot(a[:n], b)}, []float64{want}, n+1)
		checkClose(t, fmt.Sprintf("dotGo length %d", n), []float32{dotGo(a[:n], b)}, []float64{want}, n+1)
	}
}

// TestClampKeepsNaN: a NaN output stays NaN, as in the reference kernels.
func TestClampKeepsNaN(t *testing.T) {
	p := geometry(1, 2, 3, 4, 16, 1, 1, 1, false)
	p.Lo, p.Hi = 0, 6
	x := make([]float32, p.inLen())
	x[0] = float32(math.NaN())
	f := make([]float32, p.OutC*p.InC)
	for i := range f {
		f[i] = 1
	}
	for _, portable := range []bool{false, true} {
		run := func() {
			c, err := NewConv(p, f, nil)
			if err != nil {
				t.Fatal(err)
			}
			y := make([]float32, p.outLen())
			c.Run(x, y, 0, c.Units())
			if !math.IsNaN(float64(y[0])) || y[p.OutC] != 0 {
				t.Fatalf("portable=%v: outputs %v and %v, want NaN and 0", portable, y[0], y[p.OutC])
			}
			d, err := NewDepthwise(ConvParams{Batches: 1, InH: 1, InW: 1, InC: 16, OutH: 1, OutW: 1, OutC: 16,
				KH: 1, KW: 1, StrideH: 1, StrideW: 1, DilH: 1, DilW: 1, Lo: 0, Hi: 6}, f[:16], nil)
			if err != nil {
				t.Fatal(err)
			}
			in := make([]float32, 16)
			in[3] = float32(math.NaN())
			out := make([]float32, 16)
			d.Run(in, out, 0, 1)
			if !math.IsNaN(float64(out[3])) || out[4] != 0 {
				t.Fatalf("portable=%v: depthwise outputs %v and %v, want NaN and 0", portable, out[3], out[4])
			}
		}
		if portable {
			withPortable(t, run)
		} else {
			run()
		}
	}
}

func TestPlansRejectBadGeometry(t *testing.T) {
	good := geometry(1, 4, 4, 3, 8, 3, 1, 1, true)
	cases := []struct {
		name string
		make func() error
	}{
		{"zero channels", func() error {
			p := good
			p.InC = 0
			_, err := NewConv(p, nil, nil)
			return err
		}},
		{"negative padding", func() error {
			p := good
			p.PadH = -1
			_, err := NewConv(p, make([]float32, 8*9*3), nil)
			return err
		}},
		{"short filter", func() error { _, err := NewConv(good, make([]float32, 10), nil); return err }},
		{"short bias", func() error { _, err := NewConv(good, make([]float32, 8*9*3), make([]float32, 7)); return err }},
		{"too many taps", func() error {
			p := good
			p.KH, p.KW = 9, 9
			_, err := NewConv(p, make([]float32, 8*81*3), nil)
			return err
		}},
		{"depth multiplier", func() error { _, err := NewDepthwise(good, make([]float32, 9*8), nil); return err }},
		{"dense sizes", func() error { _, err := NewFullyConnected(3, 4, make([]float32, 11), nil, 0, 1); return err }},
		{"dense bias", func() error {
			_, err := NewFullyConnected(3, 4, make([]float32, 12), make([]float32, 2), 0, 1)
			return err
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.make(); !errors.Is(err, ErrGeometry) {
				t.Fatalf("error %v, want ErrGeometry", err)
			}
		})
	}
}

func TestRunAllocatesNothing(t *testing.T) {
	p := geometry(1, 14, 14, 24, 40, 3, 2, 1, true)
	r := rand.New(rand.NewPCG(6, 6))
	x := randSlice(r, p.inLen())
	c, err := NewConv(p, randSlice(r, p.OutC*9*p.InC), randSlice(r, p.OutC))
	if err != nil {
		t.Fatal(err)
	}
	y := make([]float32, p.outLen())
	dp := geometry(1, 14, 14, 24, 24, 3, 1, 1, true)
	d, err := NewDepthwise(dp, randSlice(r, 9*24), nil)
	if err != nil {
		t.Fatal(err)
	}
	dy := make([]float32, dp.outLen())
	f, err := NewFullyConnected(10, p.inLen(), randSlice(r, 10*p.inLen()), nil, -inf, inf)
	if err != nil {
		t.Fatal(err)
	}
	fy := make([]float32, 10)
	fp := geometry(1, 15, 15, 3, 16, 3, 2, 1, true) // filter rows copied at the edges
	first, err := NewConv(fp, randSlice(r, fp.OutC*9*fp.InC), nil)
	if err != nil {
		t.Fatal(err)
	}
	fx, fyy := randSlice(r, fp.inLen()), make([]float32, fp.outLen())
	for _, portable := range []bool{false, true} {
		run := func() {
			if n := testing.AllocsPerRun(20, func() {
				first.Run(fx, fyy, 0, first.Units())
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

func TestAddF32MatchesScalar(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 13))
	for _, n := range []int{0, 1, 7, 8, 9, 31, 32, 33, 100, 1000} {
		for _, act := range [][2]float32{{-inf, inf}, {0, 6}} {
			x, y := randSlice(r, n), randSlice(r, n)
			if n > 3 {
				x[3] = float32(math.NaN())
			}
			run := func() []float32 {
				z := make([]float32, n)
				AddF32(x, y, z, act[0], act[1])
				return z
			}
			for _, z := range [][]float32{run(), func() (z []float32) { withPortable(t, func() { z = run() }); return }()} {
				for i := range n {
					want := clamp(x[i]+y[i], act[0], act[1])
					if math.Float32bits(z[i]) != math.Float32bits(want) && !(math.IsNaN(float64(z[i])) && math.IsNaN(float64(want))) {
						t.Fatalf("n=%d clamp %v: element %d = %v, want %v", n, act, i, z[i], want)
					}
				}
			}
		}
	}
}
