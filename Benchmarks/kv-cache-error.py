#!/usr/bin/env python3
"""Logit error of the lossy modes (KV cache types, int8 activations) against the exact default
(fp32 KV cache, fp32 activations) on the default model.

For each SmolLM2 fixture prompt plus its first 16 greedy tokens, runs `pagoda score` in the exact
mode and in each lossy one, and compares the top-10 logits (by id) at every position. Prints max
and mean absolute error per mode. Usage:

    swift build -c release --product pagoda
    python3 Benchmarks/kv-cache-error.py [f16 bf16 int8 int8:0 int8:16 act:int8 ...]

A KV cache type alone (`f16`, `int8`, ...) sets `--kv-cache-dtype`; `int8:N` also sets
`--kv-int8-recent N` (each query's N most recent keys read from float32; int8 alone uses the
default, 64); `act:int8` sets `--activations int8` (with the fp32 cache). Also prints, per mode,
the prompts whose 16 greedy tokens (teacher-forced along the reference continuation) differ from
the reference, and the share of prompt positions whose argmax differs from transformers'
(the fixture's `argmax`), the measure the fixtures README gives for llama.cpp.

`llamacpp` measures llama.cpp itself the same way (its default CPU path: 8-bit activations and a
float16 KV cache) on the same file; run the script with the Python that has llama-cpp-python,
e.g. the venv `Benchmarks/vs-llamacpp` makes:

    ~/.cache/pagoda/llamacpp-venv/bin/python Benchmarks/kv-cache-error.py act:int8 llamacpp

`--model PATH` measures another GGUF file of the same model (e.g. the Q4_K_M requantization)
instead of the default Q4_1 one. The greedy tokens are then compared with the exact mode's own
argmax along the same tokens, and the transformers argmax (made from the Q4_1 weights) is only
indicative.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGODA = os.path.join(ROOT, ".build", "release", "pagoda")
REFERENCE = os.path.join(ROOT, "Tests", "Fixtures", "smollm2-135m", "reference.json")
DEFAULT_MODEL = os.path.expanduser("~/.cache/pagoda/models/SmolLM2-135M-Instruct.Q4_1.gguf")
MODEL = None  # --model PATH, else the default model


def flags(spec):
    if spec.startswith("act:"):
        return ["--activations", spec[4:]]
    dtype, _, recent = spec.partition(":")
    return ["--kv-cache-dtype", dtype] + (["--kv-int8-recent", recent] if recent else [])


def score(ids, spec):
    out = subprocess.run(
        [PAGODA, "score", "--tokens", ",".join(map(str, ids)), "--top", "50", "--json"] + flags(spec)
        + (["--model", MODEL] if MODEL else []),
        capture_output=True, text=True, check=True).stdout
    return json.loads(out)["positions"]


_llama = None


def llamacpp_score(ids):
    """llama.cpp's logits for every position of `ids`, in `pagoda score --json`'s shape."""
    global _llama
    import numpy as np
    from llama_cpp import Llama
    if _llama is None:
        _llama = Llama(model_path=MODEL or DEFAULT_MODEL, n_ctx=1024, logits_all=True, n_threads=2, verbose=False)
    _llama.reset()
    _llama.eval(ids)
    positions = []
    for row in np.array(_llama.scores[:len(ids)]):
        top = np.argsort(-row)[:50]
        positions.append({"argmax": int(top[0]), "top": [[int(i), float(row[i])] for i in top]})
    return positions


def main():
    global MODEL
    args = sys.argv[1:]
    if "--model" in args:
        at = args.index("--model")
        MODEL = args[at + 1]
        del args[at:at + 2]
    dtypes = args or ["f16", "bf16", "int8"]
    prompts = json.load(open(REFERENCE))["prompts"]
    exact = {p["name"]: score(p["ids"] + p["greedy"]["ids"][:16], "fp32") for p in prompts}
    for dtype in dtypes:
        errors = []
        flipped = []
        argmax_differs = positions = 0
        for p in prompts:
            tokens = p["ids"] + p["greedy"]["ids"][:16]
            lossy = llamacpp_score(tokens) if dtype == "llamacpp" else score(tokens, dtype)
            n = len(p["ids"])
            argmax_differs += sum(lossy[i]["argmax"] != p["argmax"][i] for i in range(n))
            positions += n
            steps = [lossy[n - 1 + i]["argmax"] for i in range(16)]
            reference = [exact[p["name"]][n - 1 + i]["argmax"] for i in range(16)] if MODEL else p["greedy"]["ids"][:16]
            if steps != reference:
                first = next(i for i, (a, b) in enumerate(zip(steps, reference)) if a != b)
                flipped.append(f"{p['name']}@{first}")
            for a, b in zip(exact[p["name"]], lossy):
                da, db = dict(a["top"]), dict(b["top"])
                common = [k for k in da if k in db][:10]
                errors.append(max(abs(da[k] - db[k]) for k in common))
        print(f"{dtype:8s} max abs logit error {max(errors):.4f}  mean {sum(errors) / len(errors):.4f}  "
              f"({len(errors)} positions)  greedy differs: {', '.join(flipped) or 'none'}  "
              f"prompt argmax differs from transformers: {argmax_differs}/{positions} ({100 * argmax_differs / positions:.1f}%)")


if __name__ == "__main__":
    main()
