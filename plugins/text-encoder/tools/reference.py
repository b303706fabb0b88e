"""Reference sentence embeddings for src/testdata/reference.json.

An independent forward pass of all-MiniLM-L6-v2 in numpy (f32, straight from
model.safetensors, with the fine-tuning's LoRA adapters of
data/adapter.safetensors merged here as W + B·A) with the Hugging Face
`tokenizers` package, pooled as sentence-transformers pools it (mean over
tokens, L2-normalized). The plugin's tests check its tokenizer against the
ids and its encoder (whose adapters build.rs merges) against the embeddings.

    pip install numpy scipy safetensors tokenizers
    python3 plugins/text-encoder/tools/reference.py "$(scripts/fetch-text-model.sh)" \
        plugins/text-encoder/data/adapter.safetensors \
        > plugins/text-encoder/src/testdata/reference.json
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file
from scipy.special import erf
from tokenizers import Tokenizer

TEXTS = [
    "I am so happy today, everything went really well at work!",
    "This is the worst day ever, I feel terrible and tired.",
    "Café naïve résumé — “quotes” don't 123,456.78 #hashtag @user 😍",
]


def main(model_dir, adapter_path):
    w = {k.removeprefix("bert."): v for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    adapter = load_file(adapter_path)
    merged = 0
    for name in list(w):
        base = name.removesuffix(".weight")
        if base + ".lora_A" in adapter:
            a = adapter[base + ".lora_A"].astype(np.float32)
            b = adapter[base + ".lora_B"].astype(np.float32)
            w[name] = w[name] + b @ a
            merged += 1
    if merged != len(adapter) // 2:
        sys.exit(f"{adapter_path}: {len(adapter) // 2} adapters, {merged} merged")
    tok = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tok.no_padding()
    tok.enable_truncation(256)

    def ln(x, g, b):
        m = x.mean(-1, keepdims=True)
        v = ((x - m) ** 2).mean(-1, keepdims=True)
        return (x - m) / np.sqrt(v + 1e-12) * g + b

    def lin(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    out = []
    for text in TEXTS:
        ids = tok.encode(text).ids
        t = len(ids)
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:t]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = ln(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        for layer in range(6):
            p = f"encoder.layer.{layer}."
            q, k, v = (lin(x, p + "attention.self." + n).reshape(t, 12, 32).transpose(1, 0, 2)
                       for n in ("query", "key", "value"))
            s = q @ k.transpose(0, 2, 1) / np.sqrt(32)
            a = np.exp(s - s.max(-1, keepdims=True))
            a /= a.sum(-1, keepdims=True)
            c = (a @ v).transpose(1, 0, 2).reshape(t, 384)
            x = ln(lin(c, p + "attention.output.dense") + x,
                   w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
            h = lin(x, p + "intermediate.dense")
            h = 0.5 * h * (1 + erf(h / np.sqrt(2)))
            x = ln(lin(h, p + "output.dense") + x,
                   w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        e = x.mean(0)
        e /= np.linalg.norm(e)
        out.append({"text": text, "ids": ids, "embedding": [round(float(v), 6) for v in e]})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
