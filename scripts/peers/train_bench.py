"""The peer for scripts/bench-train: the same MLP, MSE + Adam, random data, timed after one
warm-up step. Uses PyTorch when it is installed, otherwise a NumPy trainer written here.
Usage: train_bench.py LAYERS ROWS EPOCHS BATCH THREADS   (BATCH 0 = full batch)
Prints: peer=... seconds=... samples_per_second=..."""
import sys
import time

import numpy as np


def torch_run(sizes, x, y, epochs, batch, threads):
    import torch
    torch.set_num_threads(threads)
    modules = []
    for i in range(len(sizes) - 1):
        modules.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            modules.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*modules)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.MSELoss()
    x, y = torch.from_numpy(x), torch.from_numpy(y)

    def step(xb, yb):
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        return loss

    step(x[:batch], y[:batch])
    start = time.perf_counter()
    for _ in range(epochs):
        for s in range(0, len(x), batch):
            loss = step(x[s:s + batch], y[s:s + batch])
    loss.item()
    return f"torch-{torch.__version__}", time.perf_counter() - start


def numpy_run(sizes, x, y, epochs, batch, threads):
    rng = np.random.default_rng(1)
    params = []
    for i in range(len(sizes) - 1):
        bound = 1 / np.sqrt(sizes[i])
        params += [rng.uniform(-bound, bound, (sizes[i + 1], sizes[i])).astype(np.float32),
                   rng.uniform(-bound, bound, sizes[i + 1]).astype(np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = 0

    def step(xb, yb):
        nonlocal t
        acts = [xb]
        for i in range(0, len(params), 2):
            z = acts[-1] @ params[i].T + params[i + 1]
            acts.append(np.maximum(z, 0) if i < len(params) - 2 else z)
        delta = 2 * (acts[-1] - yb) / yb.size
        grads = [None] * len(params)
        for i in range(len(params) - 2, -1, -2):
            grads[i], grads[i + 1] = delta.T @ acts[i // 2], delta.sum(0)
            if i > 0:
                delta = (delta @ params[i]) * (acts[i // 2] > 0)
        t += 1
        for p, g, mi, vi in zip(params, grads, m, v):
            mi += 0.1 * (g - mi)
            vi *= 0.999
            vi += 0.001 * g * g
            p -= (1e-3 / (1 - 0.9 ** t)) * mi / (np.sqrt(vi) / np.sqrt(1 - 0.999 ** t) + 1e-8)

    step(x[:batch], y[:batch])
    start = time.perf_counter()
    for _ in range(epochs):
        for s in range(0, len(x), batch):
            step(x[s:s + batch], y[s:s + batch])
    return f"numpy-{np.__version__}", time.perf_counter() - start


def main():
    sizes = [int(s) for s in sys.argv[1].split(",")]
    rows, epochs, batch, threads = map(int, sys.argv[2:6])
    batch = batch or rows
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (rows, sizes[0])).astype(np.float32)
    y = rng.uniform(-1, 1, (rows, sizes[-1])).astype(np.float32)
    try:
        import torch  # noqa: F401
        peer, seconds = torch_run(sizes, x, y, epochs, batch, threads)
    except ImportError:
        peer, seconds = numpy_run(sizes, x, y, epochs, batch, threads)
    print(f"peer={peer} seconds={seconds} samples_per_second={rows * epochs / seconds}")


if __name__ == "__main__":
    main()
