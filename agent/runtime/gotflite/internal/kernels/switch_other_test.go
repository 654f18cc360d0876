//go:build !amd64 && !arm64

package kernels

func setAVX2(bool) {}

func setVNNI(bool) {}
