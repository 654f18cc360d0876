package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Layers of MobileNet v2 1.0 224: the first convolution, pointwise
// expansions and projections at several resolutions, depthwise layers, and
// the classifier.
var benchConvs = []struct {
	name string
	p    ConvParams
}{
	{"conv3x3s2_224x3to32", geometry(1, 224, 224, 3, 32, 3, 2, 1, true)},
	{"pw_112x32to16", geometry(1, 112, 112, 32, 16, 1, 1, 1, false)},
	{"pw_112x16to96", geometry(1, 112, 112, 16, 96, 1, 1, 1, false)},
	{"pw_56x24to144", geometry(1, 56, 56, 24, 144, 1, 1, 1, false)},
	{"pw_28x192to32", geometry(1, 28, 28, 192, 32, 1, 1, 1, false)},
	{"pw_7x960to160", geometry(1, 7, 7, 960, 160, 1, 1, 1, false)},
	{"pw_7x320to1280", geometry(1, 7, 7, 320, 1280, 1, 1, 1, false)},
}

var benchDepthwise = []struct {
	name string
	p    ConvParams
}{
	{"dw_112x32", geometry(1, 112, 112, 32, 32, 3, 1, 1, true)},
	{"dw_56x144s2", geometry(1, 56, 56, 144, 144, 3, 2, 1, true)},
	{"dw_14x576", geometry(1, 14, 14, 576, 576, 3, 1, 1, true)},
}

func kernelVariants(b *testing.B, f func(b *testing.B)) {
	b.Run("default", f)
	b.Run("portable", func(b *testing.B) { withPortable(b, func() { f(b) }) })
}

// int8Variants adds the AVX2 int8 tile without VNNI to kernelVariants.
func int8Variants(b *testing.B, f func(b *testing.B)) {
	kernelVariants(b, f)
	b.Run("novnni", func(b *testing.B) {
		setVNNI(false)
		defer setVNNI(true)
		f(b)
	})
}

func BenchmarkConv(b *testing.B) {
	for _, tc := range benchConvs {
		b.Run(tc.name, func(b *testing.B) {
			kernelVariants(b, func(b *testing.B) {
				p := tc.p
				r := rand.New(rand.NewPCG(1, 1))
				x := randSlice(r, p.inLen())
				c, err := NewConv(p, randSlice(r, p.OutC*p.KH*p.KW*p.InC), randSlice(r, p.OutC))
				if err != nil {
					b.Fatal(err)
				}
				y := make([]float32, p.outLen())
				b.ReportAllocs()
				for b.Loop() {
					c.Run(x, y, 0, c.Units())
				}
				b.ReportMetric(float64(c.Work())*2*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		})
	}
}

func BenchmarkDepthwise(b *testing.B) {
	for _, tc := range benchDepthwise {
		b.Run(tc.name, func(b *testing.B) {
			kernelVariants(b, func(b *testing.B) {
				p := tc.p
				r := rand.New(rand.NewPCG(1, 1))
				x := randSlice(r, p.inLen())
				d, err := NewDepthwise(p, randSlice(r, p.KH*p.KW*p.OutC), randSlice(r, p.OutC))
				if err != nil {
					b.Fatal(err)
				}
				y := make([]float32, p.outLen())
				b.ReportAllocs()
				for b.Loop() {
					d.Run(x, y, 0, d.Units())
				}
				b.ReportMetric(float64(d.Work())*2*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		})
	}
}

func BenchmarkFullyConnected(b *testing.B) {
	for _, units := range []int{1000} {
		b.Run(fmt.Sprintf("1280to%d", units), func(b *testing.B) {
			kernelVariants(b, func(b *testing.B) {
				r := rand.New(rand.NewPCG(1, 1))
				x := randSlice(r, 1280)
				f, err := NewFullyConnected(units, 1280, randSlice(r, units*1280), randSlice(r, units), -inf, inf)
				if err != nil {
					b.Fatal(err)
				}
				y := make([]float32, units)
				b.ReportAllocs()
				for b.Loop() {
					f.Run(x, y, 0, units)
				}
				b.ReportMetric(float64(f.Work())*2*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		})
	}
}

func BenchmarkConvInt8(b *testing.B) {
	for _, tc := range benchConvs {
		b.Run(tc.name, func(b *testing.B) {
			int8Variants(b, func(b *testing.B) {
				p := tc.p
				r := rand.New(rand.NewPCG(1, 1))
				x := randInt8(r, p.inLen())
				c, err := NewConvInt8(p, 5, randInt8(r, p.OutC*p.KH*p.KW*p.InC), randInt32(r, p.OutC, 1000), randRequant(r, p.OutC))
				if err != nil {
					b.Fatal(err)
				}
				y := make([]int8, p.outLen())
				b.ReportAllocs()
				for b.Loop() {
					c.Run(x, y, 0, c.Units())
				}
				b.ReportMetric(float64(c.Work())*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
			})
		})
	}
}

func BenchmarkDepthwiseInt8(b *testing.B) {
	for _, tc := range benchDepthwise {
		b.Run(tc.name, func(b *testing.B) {
			kernelVariants(b, func(b *testing.B) {
				p := tc.p
				r := rand.New(rand.NewPCG(1, 1))
				x := randInt8(r, p.inLen())
				d, err := NewDepthwiseInt8(p, -3, randInt8(r, p.KH*p.KW*p.OutC), randInt32(r, p.OutC, 1000), randRequant(r, p.OutC))
				if err != nil {
					b.Fatal(err)
				}
				y := make([]int8, p.outLen())
				b.ReportAllocs()
				for b.Loop() {
					d.Run(x, y, 0, d.Units())
				}
				b.ReportMetric(float64(d.Work())*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
			})
		})
	}
}
