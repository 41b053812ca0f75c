#!/usr/bin/env python3
"""Regenerates embeddings/tests/data/minilm_reference.json.

An independent numpy implementation of the BERT forward pass (post-LN, erf
GELU, mean pooling, L2 normalisation) run on the all-MiniLM-L6-v2 safetensors
checkpoint that scripts/fetch-models.sh --test installs, with the checkpoint's
own tokenizer.json through the Python `tokenizers` package. The Rust loader for
Hugging Face checkpoints must reproduce these vectors.

Needs: python3 with numpy, safetensors and tokenizers.
Usage: scripts/gen-minilm-reference.py
"""
import json
import math
import os

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(os.environ.get("WENKE_MODEL_DIR", os.path.join(ROOT, "models")), "all-MiniLM-L6-v2")
OUT = os.path.join(ROOT, "embeddings", "tests", "data", "minilm_reference.json")
TEXTS = [
    "How do I protect potato plants from late blight?",
    "Potato late blight control methods",
    "Is it safe to eat leftover vegetables kept overnight?",
    "What should I do during an earthquake?",
    "The quick brown fox jumps over the lazy dog.",
    "",
    "Rice blast is a fungal disease. " * 80,
]

erf = np.vectorize(math.erf)


def layer_norm(x, w, b, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def embed(weights, config, ids):
    h, heads = config["hidden_size"], config["num_attention_heads"]
    eps = config["layer_norm_eps"]
    hd = h // heads
    w = lambda name: weights[name].astype(np.float64)
    x = w("embeddings.word_embeddings.weight")[ids] + w("embeddings.position_embeddings.weight")[: len(ids)]
    x = x + w("embeddings.token_type_embeddings.weight")[0]
    x = layer_norm(x, w("embeddings.LayerNorm.weight"), w("embeddings.LayerNorm.bias"), eps)
    for l in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{l}."
        lin = lambda v, n: v @ w(p + n + ".weight").T + w(p + n + ".bias")
        q = lin(x, "attention.self.query").reshape(len(ids), heads, hd).transpose(1, 0, 2)
        k = lin(x, "attention.self.key").reshape(len(ids), heads, hd).transpose(1, 0, 2)
        v = lin(x, "attention.self.value").reshape(len(ids), heads, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(1, 0, 2).reshape(len(ids), h)
        x = layer_norm(x + lin(ctx, "attention.output.dense"), w(p + "attention.output.LayerNorm.weight"),
                       w(p + "attention.output.LayerNorm.bias"), eps)
        mid = lin(x, "intermediate.dense")
        mid = 0.5 * mid * (1 + erf(mid / math.sqrt(2)))
        x = layer_norm(x + lin(mid, "output.dense"), w(p + "output.LayerNorm.weight"),
                       w(p + "output.LayerNorm.bias"), eps)
    return x.mean(0)


def main():
    weights = load_file(os.path.join(MODEL, "model.safetensors"))
    with open(os.path.join(MODEL, "config.json")) as f:
        config = json.load(f)
    tokenizer = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    window = config["max_position_embeddings"] - 2
    records = []
    for text in TEXTS:
        content = tokenizer.encode(text, add_special_tokens=False).ids
        chunks = [content[i:i + window] for i in range(0, len(content), window)] or [[]]
        total, weight = 0, 0.0
        for chunk in chunks:
            pooled = embed(weights, config, [cls] + chunk + [sep])
            total = total + max(len(chunk), 1) * pooled
            weight += max(len(chunk), 1)
        vector = total / weight
        vector = vector / np.linalg.norm(vector)
        records.append({"text": text, "ids": content, "vector": [round(float(v), 7) for v in vector]})
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"generator": "scripts/gen-minilm-reference.py (numpy, float64)", "records": records}, f)
        f.write("\n")
    print(f"wrote {len(records)} records to {OUT}")


if __name__ == "__main__":
    main()
