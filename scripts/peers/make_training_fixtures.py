"""Makes the PyTorch reference runs in Tests/MaaSTrainingTests/Fixtures/torch_* that cover what
the shared fixtures do not: tanh/sigmoid/GELU, three layers, SGD with Nesterov and weight decay,
Adam with L2 weight decay, AdamW. Same layout as shared/fixtures/training (see its README).

Run with a Python that has torch: python make_training_fixtures.py OUTPUT_DIR
"""
import json
import os
import sys

import numpy as np
import torch

torch.set_num_threads(1)

ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "gelu": torch.nn.GELU}


def make_run(out, name, layers, activation, loss, optimizer, epochs, batch, seed, **opt):
    torch.manual_seed(seed)
    modules = []
    for i in range(len(layers) - 1):
        modules.append(torch.nn.Linear(layers[i], layers[i + 1]))
        if i < len(layers) - 2:
            modules.append(ACTIVATIONS[activation]())
    model = torch.nn.Sequential(*modules)
    rows = 240
    x = torch.randn(rows, layers[0])
    if loss == "mse":
        y = torch.randn(rows, layers[-1])
        criterion = torch.nn.MSELoss()
    else:
        y = torch.randint(0, layers[-1], (rows,))
        criterion = torch.nn.CrossEntropyLoss()
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    linear = [i for i, m in enumerate(modules) if isinstance(m, torch.nn.Linear)]
    for i in linear:
        np.save(f"{folder}/init.{i}.weight.npy", modules[i].weight.detach().numpy())
        np.save(f"{folder}/init.{i}.bias.npy", modules[i].bias.detach().numpy())
    if optimizer == "sgd":
        opt_obj = torch.optim.SGD(model.parameters(), **opt)
    elif optimizer == "adam":
        opt_obj = torch.optim.Adam(model.parameters(), **opt)
    else:
        opt_obj = torch.optim.AdamW(model.parameters(), **opt)
    losses = []
    for _ in range(epochs):
        for start in range(0, rows, batch):
            opt_obj.zero_grad()
            value = criterion(model(x[start:start + batch]), y[start:start + batch])
            losses.append(value.item())
            value.backward()
            opt_obj.step()
    for i in linear:
        np.save(f"{folder}/final.{i}.weight.npy", modules[i].weight.detach().numpy())
        np.save(f"{folder}/final.{i}.bias.npy", modules[i].bias.detach().numpy())
    np.save(f"{folder}/X.npy", x.numpy())
    np.save(f"{folder}/Y.npy", y.numpy())
    np.save(f"{folder}/losses.npy", np.array(losses, dtype=np.float64))
    run = dict(layers=layers, activation=activation, loss=loss, optimizer=optimizer, epochs=epochs, batch=batch,
               linear_modules=linear, torch=torch.__version__, **opt)
    with open(f"{folder}/run.json", "w") as f:
        json.dump(run, f, indent=1)


def main():
    out = sys.argv[1]
    make_run(out, "torch_tanh_nesterov", [6, 16, 12, 4], "tanh", "mse", "sgd", 10, 60, 1,
             lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    make_run(out, "torch_sigmoid_adamw", [6, 16, 4], "sigmoid", "mse", "adamw", 10, 48, 2,
             lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)
    make_run(out, "torch_gelu_adam_l2_xent", [6, 16, 5], "gelu", "cross-entropy", "adam", 10, 40, 3,
             lr=0.005, weight_decay=1e-2)
    make_run(out, "torch_relu_sgd_dampening", [6, 8, 3], "relu", "mse", "sgd", 5, 240, 4,
             lr=0.1, momentum=0.5, dampening=0.3, weight_decay=0.0)


if __name__ == "__main__":
    main()
