"""onnxruntime's forward passes per second for one model and batch: the engine benchmark's peer."""
import sys
import time

import numpy as np
import onnxruntime as ort

model, shape, seconds, threads = sys.argv[1], [int(d) for d in sys.argv[2].split(",")], float(sys.argv[3]), int(sys.argv[4])
options = ort.SessionOptions()
options.intra_op_num_threads = threads
options.inter_op_num_threads = 1
session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
session.run(None, {name: x})
runs, start = 0, time.perf_counter()
while time.perf_counter() - start < seconds:
    session.run(None, {name: x})
    runs += 1
elapsed = time.perf_counter() - start
print(f"runs={runs} seconds={elapsed} samples_per_second={runs * shape[0] / elapsed}")
