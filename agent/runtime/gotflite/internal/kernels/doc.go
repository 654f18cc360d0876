// Package kernels holds gotflite's hot float32 compute loops: convolution as
// an indirect GEMM over prepacked weights, depthwise convolution, and the dot
// products of FULLY_CONNECTED.
//
// Each kernel has a pure-Go version that runs everywhere and, on amd64 CPUs
// with AVX2 and FMA (checked once at init), an assembly version that the
// same plan calls instead. The assembly fuses multiply and add, so its
// results differ from the Go path's in the last bits; tests hold both to a
// tight tolerance of each other on odd sizes, edges and tails.
//
// Plans (Conv, Depthwise, FullyConnected) are built once at model load from
// constant weights and are then read-only: any number of goroutines may run
// disjoint unit ranges of one plan at once. Running a plan allocates
// nothing.
package kernels
