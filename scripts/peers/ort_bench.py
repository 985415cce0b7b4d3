"""onnxruntime's forward passes per second for one model and input shape: the engine benchmark's
peer. Default session options (every graph optimization on, so onnxruntime's own attention,
GELU and LayerNorm fusions run), `intra_op_num_threads` as given. Every input gets the shape;
inputs are fed as maas-bench feeds them: random floats, token ids from 1000..1999, a full
attention mask, zero token types."""
import sys
import time

import numpy as np
import onnxruntime as ort

model, shape, seconds, threads = sys.argv[1], [int(d) for d in sys.argv[2].split(",")], float(sys.argv[3]), int(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(0)
feeds = {}
for info in session.get_inputs():
    if info.type == "tensor(int64)":
        if info.name == "attention_mask":
            feeds[info.name] = np.ones(shape, np.int64)
        elif info.name == "token_type_ids":
            feeds[info.name] = np.zeros(shape, np.int64)
        else:
            feeds[info.name] = rng.integers(1000, 2000, shape).astype(np.int64)
    elif info.type == "tensor(bool)":
        feeds[info.name] = np.zeros(shape, bool)
    else:
        feeds[info.name] = rng.uniform(-1, 1, shape).astype(np.float32)
session.run(None, feeds)
runs, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    session.run(None, feeds)
    runs += 1
elapsed = time.perf_counter() - start
print(f"runs={runs} seconds={elapsed} samples_per_second={runs * shape[0] / elapsed}")
