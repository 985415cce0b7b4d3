"""The seed's own design, as the benchmark's peer for `POST /predict`: Flask's server with the
seed model's forward pass in NumPy (Linear → ReLU → Linear), weights read from the same ONNX
file maas serves. Usage: seed_flask.py MODEL.onnx PORT"""
import logging
import sys

import numpy as np
import onnx
from flask import Flask, jsonify, request
from onnx import numpy_helper

weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(sys.argv[1]).graph.initializer}
w1, b1, w2, b2 = (weights[name].astype(np.float32) for name in ("0.weight", "0.bias", "2.weight", "2.bias"))

app = Flask(__name__)
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request: the peer at its fastest


@app.post("/predict")
def predict():
    x = np.asarray(request.get_json()["input"], dtype=np.float32)
    hidden = np.maximum(x @ w1.T + b1, 0)
    return jsonify({"output": (hidden @ w2.T + b2).tolist()})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
