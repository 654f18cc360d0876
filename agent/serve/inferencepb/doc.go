// Package inferencepb holds the Go code generated from grpc_predict_v2.proto,
// the Open Inference Protocol's gRPC service (package inference). Regenerate
// it with `go generate ./agent/serve/inferencepb` (needs protoc,
// protoc-gen-go v1.36.10 and protoc-gen-go-grpc v1.5.1 on PATH).
package inferencepb

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative grpc_predict_v2.proto
