"""Exports the small randomly initialised transformers of Tests/MaaSComputeTests/Fixtures/transformers
through both of PyTorch's exporters, with onnxruntime's outputs (see that folder's README.md).

Run with a Python that has torch, transformers and onnxscript (scripts/make-transformer-fixtures
makes one): python make_transformer_fixtures.py OUTPUT_DIR
"""
import collections
import json
import os
import sys
import warnings
import zlib

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers

warnings.filterwarnings("ignore")
VOCAB, HIDDEN, LAYERS, HEADS, FFN, POSITIONS = 500, 64, 2, 4, 128, 64
TEXT_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


class LastHiddenState(torch.nn.Module):
    """A Hugging Face model called with keyword inputs, returning one named output."""

    def __init__(self, model, inputs, output):
        super().__init__()
        self.model, self.inputs, self.output = model, inputs, output

    def forward(self, *args):
        return getattr(self.model(**dict(zip(self.inputs, args))), self.output)


class PaddedEncoder(torch.nn.Module):
    """torch.nn.TransformerEncoder over embeddings, with a key padding mask (True = padding)."""

    def __init__(self):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(HIDDEN, HEADS, FFN, dropout=0.0, batch_first=True, activation="gelu")
        self.encoder = torch.nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)

    def forward(self, embeddings, padding_mask):
        return self.encoder(embeddings, src_key_padding_mask=padding_mask)


def text_batch(batch, seq, lengths, names, pad_id=0, first_id=2):
    ids = torch.randint(first_id, VOCAB, (batch, seq))
    mask = torch.zeros(batch, seq, dtype=torch.int64)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
        ids[row, length:] = pad_id
    values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros(batch, seq, dtype=torch.int64)}
    return [values[name] for name in names]


def hf(config_class, model_class, names, output="last_hidden_state", pad_id=0, **extra):
    config = config_class(**extra)
    model = model_class(config).eval()
    return LastHiddenState(model, names, output), names, [output], lambda b, s, lengths: text_batch(b, s, lengths, names, pad_id)


def bert_like(config_class, model_class, names=TEXT_INPUTS, output="last_hidden_state", **extra):
    return hf(config_class, model_class, names, output=output, vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
              num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=POSITIONS, **extra)


def models(only=()):
    """(name, module, input names, output names, input maker) per family; each seeded by name."""
    for name, build in FAMILIES:
        if only and name not in only:
            continue
        seed(name, "weights")
        yield (name, *build())


def _families():
    t = transformers
    yield "bert", lambda: bert_like(t.BertConfig, t.BertModel)
    yield "bert_classifier", lambda: bert_like(t.BertConfig, t.BertForSequenceClassification, output="logits", num_labels=3)
    yield "roberta", lambda: hf(t.RobertaConfig, t.RobertaModel, ["input_ids", "attention_mask"], pad_id=1, vocab_size=VOCAB,
                         hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
                         max_position_embeddings=POSITIONS + 2)
    yield "distilbert", lambda: hf(t.DistilBertConfig, t.DistilBertModel, ["input_ids", "attention_mask"], vocab_size=VOCAB,
                            dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN, max_position_embeddings=POSITIONS)
    yield "albert", lambda: hf(t.AlbertConfig, t.AlbertModel, TEXT_INPUTS, vocab_size=VOCAB, embedding_size=32, hidden_size=HIDDEN,
                        num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN,
                        max_position_embeddings=POSITIONS)
    yield "electra", lambda: bert_like(t.ElectraConfig, t.ElectraModel, embedding_size=32)
    yield "gpt2", lambda: hf(t.GPT2Config, t.GPT2LMHeadModel, ["input_ids", "attention_mask"], output="logits", vocab_size=VOCAB,
                      n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=POSITIONS,
                      bos_token_id=0, eos_token_id=0)
    def vit():
        model = t.ViTModel(t.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                       num_attention_heads=HEADS, intermediate_size=FFN)).eval()
        return (LastHiddenState(model, ["pixel_values"], "last_hidden_state"), ["pixel_values"], ["last_hidden_state"],
                lambda b, s, lengths: [torch.randn(b, 3, 32, 32)])
    yield "vit", vit
    def encoder_inputs(b, s, lengths):
        padding = torch.ones(b, s, dtype=torch.bool)
        for row, length in enumerate(lengths):
            padding[row, :length] = False
        return [torch.randn(b, s, HIDDEN), padding]
    yield "torch_encoder", lambda: (PaddedEncoder().eval(), ["embeddings", "padding_mask"], ["output"], encoder_inputs)


FAMILIES = list(_families())


def seed(name, salt):
    """Each family's weights and inputs depend on its name only, so one family can be re-made alone."""
    torch.manual_seed(zlib.crc32(f"{name}/{salt}".encode()))


def export(out, name, module, input_names, output_names, make_inputs):
    image = input_names == ["pixel_values"]
    # The TorchScript exporter restores the module's training flag afterwards: keep it off.
    module = module.eval()
    seed(name, "inputs")
    sample = make_inputs(3, 12, [12, 7, 10])
    written = []
    axes = {n: {0: "batch"} if image else {0: "batch", 1: "seq"} for n in input_names + output_names}
    if output_names == ["logits"] and name != "gpt2":
        axes["logits"] = {0: "batch"}
    base = f"{name}.torchscript.op17"
    # nn.MultiheadAttention's TorchScript export bakes the traced batch and length into its
    # reshapes, so that export is declared with the traced shapes (and has no batch-1 case).
    static = isinstance(module, PaddedEncoder)
    torch.onnx.export(module, tuple(sample), f"{out}/{base}.onnx", dynamo=False, opset_version=17,
                      input_names=input_names, output_names=output_names, dynamic_axes=None if static else axes)
    written.append(base)
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=POSITIONS)
    shapes = [{0: batch} if image else {0: batch, 1: seq} for _ in input_names]
    program = torch.onnx.export(module, tuple(sample), dynamo=True, input_names=input_names,
                                output_names=output_names, dynamic_shapes={"args": tuple(shapes)} if isinstance(module, LastHiddenState) else tuple(shapes))
    opset = program.model.opset_imports[""]
    base = f"{name}.dynamo.op{opset}"
    program.save(f"{out}/{base}.onnx", external_data=True)
    written.append(base)
    cases = {"b1": make_inputs(1, 9, [9]), "b3": make_inputs(3, 12, [12, 7, 10])}
    for base in written:
        run_cases = {"b3": cases["b3"]} if static and "torchscript" in base else cases
        graph = onnx.load(f"{out}/{base}.onnx", load_external_data=False)
        session = ort.InferenceSession(f"{out}/{base}.onnx", providers=["CPUExecutionProvider"])
        summary = {"exporter": base.split(".")[1], "opset": [[o.domain, o.version] for o in graph.opset_import],
                   "ops": sorted(collections.Counter(n.op_type for n in graph.graph.node)),
                   "inputs": input_names, "outputs": output_names}
        summary["cases"] = list(run_cases)
        for case, tensors in run_cases.items():
            feeds = {n: t.numpy() for n, t in zip(input_names, tensors)}
            results = session.run(output_names, feeds)
            with torch.no_grad():
                eager = module.eval()(*tensors)
            summary[f"{case}_max_abs_diff_vs_pytorch"] = float(np.abs(results[0] - eager.numpy()).max())
            for n, value in feeds.items():
                np.save(f"{out}/{base}.{case}.in.{n}.npy", value)
            for n, value in zip(output_names, results):
                np.save(f"{out}/{base}.{case}.out.{n}.npy", value)
        with open(f"{out}/{base}.json", "w") as f:
            json.dump(summary, f, indent=1)
        print(base, summary["opset"], len(summary["ops"]), "ops", [summary.get(f"{c}_max_abs_diff_vs_pytorch") for c in cases])


def main():
    out = sys.argv[1]
    only = set(sys.argv[2:])
    os.makedirs(out, exist_ok=True)
    for name, module, inputs, outputs, make_inputs in models(only):
        export(out, name, module, inputs, outputs, make_inputs)


if __name__ == "__main__":
    main()
