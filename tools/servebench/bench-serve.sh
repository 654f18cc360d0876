#!/usr/bin/env bash
# Runs the serving benchmark of docs/BENCHMARKS.md: the FastAPI peer
# (tools/servepeer) is started on a free localhost port, then servebench
# measures the in-process floor, the agent's local API (REST binary and
# JSON, gRPC, over the unix socket) and the peer on the 1 KB-input model,
# and the batching rows on the large batchable model. `make bench-serve`
# calls it after building the virtual environments it needs.
#
# Environment: PEER_PY (the peer venv's python), MODELGEN_PY (the modelgen
# venv's python, to build the large model once into BENCH_DIR), DURATION,
# CONCURRENCY.
set -euo pipefail
PEER_PY=${PEER_PY:-.venv-servepeer/bin/python}
MODELGEN_PY=${MODELGEN_PY:-.venv/bin/python}
BENCH_DIR=${BENCH_DIR:-.cache/bench-models}
DURATION=${DURATION:-3s}
CONCURRENCY=${CONCURRENCY:-1,8,32}
MODEL=testdata/models/dense_batch/model.tflite
XL=$BENCH_DIR/dense_batch_xl/model.tflite

if [ ! -f "$XL" ]; then
	"$MODELGEN_PY" tools/modelgen/modelgen.py --out "$BENCH_DIR" --only dense_batch_xl
fi
go build -o "${TMPDIR:-/tmp}/servebench.$$" ./tools/servebench
bench="${TMPDIR:-/tmp}/servebench.$$"

port=$("$PEER_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PEER_PY" tools/servepeer/servepeer.py "$MODEL" bench "$port" &
peer=$!
trap 'kill "$peer" 2>/dev/null; wait "$peer" 2>/dev/null || true; rm -f "$bench"' EXIT
for _ in $(seq 100); do
	curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null && break
	sleep 0.1
done

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$bench" -model "$MODEL" -peer "127.0.0.1:$port" -duration "$DURATION" -concurrency "$CONCURRENCY"
echo
# Batching: each request is one row; the unbatched rows run each request at
# batch 1, the batched one groups up to 16 rows per run (one batch at a
# time, on both cores).
"$bench" -model "$XL" -batch 16 -batch-concurrency 1 -batch-threads 2 -batch-delay 1ms \
	-only-batching -duration "$DURATION" -concurrency 16
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
