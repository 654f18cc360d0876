"""The FastAPI + official TFLite interpreter peer that tools/servebench
compares Starling's local API with: the common way to put a .tflite model
behind HTTP in Python. It answers the OIP v2 JSON infer request on
POST /v2/models/{name}/infer (one interpreter, guarded by a lock, as the
interpreter is not re-entrant).

Usage: python servepeer.py MODEL.tflite NAME PORT   (binds 127.0.0.1)
"""
import sys
import threading

import numpy as np
import uvicorn
from ai_edge_litert.interpreter import Interpreter
from fastapi import FastAPI, HTTPException, Request

model_path, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
interp = Interpreter(model_path=model_path, num_threads=1)
interp.allocate_tensors()
inp = interp.get_input_details()[0]
out = interp.get_output_details()[0]
lock = threading.Lock()
app = FastAPI()


@app.get("/v2/health/ready")
def ready():
    return {"ready": True}


@app.post("/v2/models/{model}/infer")
async def infer(model: str, request: Request):
    if model != name:
        raise HTTPException(404, f"model {model} is not served")
    body = await request.json()
    x = body["inputs"][0]
    arr = np.asarray(x["data"], dtype=np.float32).reshape(x["shape"])
    with lock:
        interp.set_tensor(inp["index"], arr)
        interp.invoke()
        y = interp.get_tensor(out["index"])
    return {"model_name": name, "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": list(y.shape), "data": y.ravel().tolist()}]}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
