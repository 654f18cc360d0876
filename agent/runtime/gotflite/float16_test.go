package gotflite

import (
	"math"
	"testing"
)

func TestFloat16To32(t *testing.T) {
	tests := []struct {
		name string
		h    uint16
		want float32
	}{
		{"one", 0x3c00, 1},
		{"minus two", 0xc000, -2},
		{"largest normal", 0x7bff, 65504},
		{"smallest normal", 0x0400, 1.0 / (1 << 14)},
		{"smallest subnormal", 0x0001, 1.0 / (1 << 24)},
		{"largest subnormal", 0x03ff, 1023.0 / (1 << 24)},
		{"negative subnormal", 0x8200, -512.0 / (1 << 24)},
		{"one third", 0x3555, 0.333251953125},
		{"zero", 0x0000, 0},
		{"infinity", 0x7c00, float32(math.Inf(1))},
		{"minus infinity", 0xfc00, float32(math.Inf(-1))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := float16to32(tt.h); got != tt.want {
				t.Errorf("float16to32(%#04x) = %g, want %g", tt.h, got, tt.want)
			}
		})
	}
	if got := float16to32(0x8000); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("float16to32(0x8000) = %g, want -0", got)
	}
	if got := math.Float32bits(float16to32(0x7e01)); got != 0x7fc02000 {
		t.Errorf("float16to32(0x7e01) bits = %#08x, want NaN 0x7fc02000", got)
	}
}
