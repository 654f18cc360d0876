"""Drive Starling's local API with the official Triton client (HTTP and gRPC).

Usage: check.py HTTP_ADDR GRPC_ADDR MODEL INPUT_JSON
Prints one JSON object with what each call returned; the Go test
(agent/serve/tritonclient_test.go) checks it.
"""
import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient


def main():
    http_addr, grpc_addr, model, data = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    x = np.array([data], dtype=np.float32)
    out = {}

    h = httpclient.InferenceServerClient(url=http_addr)
    out["http_live"] = h.is_server_live()
    out["http_ready"] = h.is_server_ready()
    out["http_model_ready"] = h.is_model_ready(model)
    out["http_server_metadata"] = h.get_server_metadata()
    out["http_model_metadata"] = h.get_model_metadata(model)
    for binary in (True, False):
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        req_out = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
        r = h.infer(model, [inp], outputs=[req_out], request_id="t1")
        out["http_infer_binary" if binary else "http_infer_json"] = r.as_numpy("probabilities").tolist()
    try:
        h.get_model_metadata("no-such-model")
        out["http_unknown"] = "no error"
    except Exception as e:  # InferenceServerException
        out["http_unknown"] = str(e)

    g = grpcclient.InferenceServerClient(url=grpc_addr)
    out["grpc_live"] = g.is_server_live()
    out["grpc_ready"] = g.is_server_ready()
    out["grpc_model_ready"] = g.is_model_ready(model)
    md = g.get_model_metadata(model, as_json=True)
    out["grpc_model_metadata"] = md
    out["grpc_server_metadata"] = g.get_server_metadata(as_json=True)
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    r = g.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput("probabilities")])
    out["grpc_infer"] = r.as_numpy("probabilities").tolist()
    try:
        g.infer("no-such-model", [inp])
        out["grpc_unknown"] = "no error"
    except Exception as e:
        out["grpc_unknown"] = str(e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
