#!/usr/bin/env python3
"""GGUF versions of the tiny Hugging Face fixtures in Tests/Fixtures/tiny, written the way
llama.cpp's convert_hf_to_gguf.py writes them (float32 output, `--outtype f32`).

Regenerate (from the repository root; needs numpy and the `gguf` package, no torch):

    python3 Tests/Fixtures/tiny-gguf/make_gguf.py

This rewrites Tests/Fixtures/tiny-gguf/*.gguf and the two gpt_oss_mxfp4* folders. The output is deterministic (same inputs, same bytes).

What is reproduced from the converter (llama.cpp `conversion/{base,llama,gemma,qwen,deepseek,gpt_oss}.py`
and gguf-py's tensor map):
- the architecture string and the `{arch}.*` keys each model class writes, in the converter's order
  (a later write of the same key wins, as in GGUFWriter);
- tensor names (gguf-py's TensorNameMap) and ggml dimension order (numpy shapes are reversed on write);
- llama / Mixtral: the Q/K row permutation (`LlamaModel.permute`) so that llama.cpp's adjacent-pair
  RoPE equals Hugging Face's rotate-half;
- Gemma 2/3: `+1` on every tensor whose name ends in `norm.weight`; no output tensor (tied);
- Mixtral, Qwen3-MoE, DeepSeek: per-expert tensors stacked into `[experts, rows, cols]`;
- DeepSeek: `num_key_value_heads` written as 1, `kv_b_proj` split into `attn_k_b` (transposed per head)
  and `attn_v_b`, `key_length_mla` / `value_length_mla`, `yarn_log_multiplier = 0.1 * mscale_all_dim`,
  `e_score_correction_bias` as `exp_probs_b.bias`, `expert_gating_func` only when the config has
  `scoring_func`;
- GPT-OSS: float `gate_up_proj [E, hidden, 2I]` transposed and split into gate (even rows) and up
  (odd rows), `down_proj` transposed, biases split the same way, `sinks` -> `attn_sinks.weight`.

The fixtures carry no tokenizer files; Pagoda's GGUF loader requires `tokenizer.ggml.*`, so every file
gets the same minimal byte-level (`gpt2`) vocabulary of 512 tokens: the 256 byte symbols and 256
two-letter merges. It only has to load; the tests feed token ids.

Files written (Tests/Fixtures/tiny-gguf/):
- llama, gemma2, gemma3, mixtral, qwen3_moe, gpt_oss, deepseek_v3: converted from the fixture folder
  as it is.
- deepseek_v3_sigmoid: converted from the deepseek_v3 fixture with `"scoring_func": "sigmoid"` added to
  its config. Real DeepSeek-V3 config.json files carry that key (with `topk_method: noaux_tc`); the
  fixture's was saved by transformers 5.x, which drops it because its DeepseekV3 always routes with
  sigmoid scores. The converter writes `expert_gating_func = 2` only when the key is there, and llama.cpp
  falls back to softmax routing without it, so the plain deepseek_v3.gguf routes differently from the
  Hugging Face model, while this one is the GGUF of an equivalent config (transformers ignores the key).

MXFP4 (GPT-OSS's expert format), from the gpt_oss fixture with its expert weights quantized (round to
nearest per 32-element block of a row; the block's E8M0 scale is the smallest power of two that fits the
block's largest magnitude in FP4's range, 6):
- gpt_oss_mxfp4/: a Hugging Face folder as openai/gpt-oss checkpoints store experts:
  `mlp.experts.{gate_up,down}_proj_{blocks,scales}` (U8; rows = output features, gate/up rows
  interleaved; low nibble = even element), float biases, and a `quantization_config`.
- gpt_oss_mxfp4_dequantized/: the same model with float `gate_up_proj` / `down_proj` holding exactly the
  dequantized values (the reference for the folder above).
- gpt_oss_mxfp4.gguf: what convert_hf_to_gguf.py makes of gpt_oss_mxfp4/ (GptOssModel.repack_mxfp4:
  GGML_TYPE_MXFP4 expert tensors, ggml nibble order).

Configs llama.cpp cannot express (so the GGUF is exact but not the same model):
- gemma3: query_pre_attn_scalar 24 != head_dim 32 (llama.cpp scales by head_dim^-0.5 unless 27B), and
  layer_types [S, S, F, S] (the converter writes no layer pattern; llama.cpp's gemma3 default period 6
  makes all 4 layers sliding).
- gpt_oss: swiglu_limit 1.0 (llama.cpp hard-codes 7.0) and rope truncate false (llama.cpp always truncates
  the YaRN ramp).
"""

from __future__ import annotations

import copy
import json
import logging
import struct
import sys
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

import gguf

HERE = Path(__file__).resolve().parent
TINY = HERE.parent / "tiny"


# ----------------------------------------------------------------------------------------------
# safetensors reader (numpy only)

_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Tensors of a .safetensors file: 8-byte little-endian header length, JSON header, raw data."""
    data = path.read_bytes()
    (length,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + length])
    base = 8 + length
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        raw = data[base + begin:base + end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<"))
        out[name] = array.reshape(shape).copy()
    return out


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Writes `tensors` (in the given order) as a .safetensors file."""
    names = {np.dtype(np.float32): "F32", np.dtype(np.uint8): "U8", np.dtype(np.int32): "I32"}
    header: dict[str, object] = {}
    offset = 0
    blobs = []
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": names[array.dtype], "shape": list(array.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


# ----------------------------------------------------------------------------------------------
# converter (mirrors convert_hf_to_gguf's TextModel and the family subclasses)

def bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table, indexed by byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


class Converter:
    """One Hugging Face fixture folder -> one GGUF, following TextModel.set_gguf_parameters and
    TextModel.modify_tensors (map names, stack experts); subclasses add their family's changes."""

    model_arch: gguf.MODEL_ARCH

    def __init__(self, folder: Path, config_changes: dict | None = None):
        self.folder = folder
        self.hparams = json.loads((folder / "config.json").read_text())
        self.hparams.update(config_changes or {})
        self.tensors = read_safetensors(folder / "model.safetensors")
        self.block_count = self.hparams["num_hidden_layers"]
        self.tensor_map = gguf.get_tensor_name_map(self.model_arch, self.block_count)
        self.rope_parameters = copy.deepcopy(self.hparams.get("rope_parameters", self.hparams.get("rope_scaling")) or {})
        self.writer: gguf.GGUFWriter

    def find_hparam(self, keys: Iterable[str], optional: bool = False):
        for key in keys:
            if key in self.hparams:
                return self.hparams[key]
        if optional:
            return None
        raise KeyError(f"could not find any of {list(keys)}")

    # -- metadata ------------------------------------------------------------------------------

    def set_gguf_parameters(self) -> None:
        w, h = self.writer, self.hparams
        w.add_block_count(self.block_count)
        if (n_ctx := self.find_hparam(["max_position_embeddings", "n_ctx", "n_positions"], optional=True)) is not None:
            w.add_context_length(n_ctx)
        if (n_embd := self.find_hparam(["hidden_size", "n_embd", "dim"], optional=True)) is not None:
            w.add_embedding_length(n_embd)
        if (n_ff := self.find_hparam(["prefix_dense_intermediate_size", "dense_intermediate_size", "intermediate_size", "n_inner", "hidden_dim"], optional=True)) is not None:
            w.add_feed_forward_length(n_ff)
        if (n_head := self.find_hparam(["num_attention_heads", "n_head", "n_heads"], optional=True)) is not None:
            w.add_head_count(n_head)
        if (n_head_kv := self.find_hparam(["num_key_value_heads", "n_kv_heads"], optional=True)) is not None:
            w.add_head_count_kv(n_head_kv)
        rope = self.rope_parameters.get("full_attention", self.rope_parameters)
        if (rope_type := rope.get("rope_type")) is not None:
            factor = rope.get("factor")
            if rope_type == "linear" and factor is not None:
                w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
                w.add_rope_scaling_factor(factor)
            elif rope_type == "yarn" and factor is not None:
                w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
                w.add_rope_scaling_factor(factor)
                w.add_rope_scaling_orig_ctx_len(rope["original_max_position_embeddings"])
                if (ext := rope.get("extrapolation_factor")) is not None:
                    w.add_rope_scaling_yarn_ext_factor(ext)
                if (attn := rope.get("attention_factor", rope.get("attn_factor"))) is not None:
                    w.add_rope_scaling_yarn_attn_factor(attn)
                if (beta_fast := rope.get("beta_fast")) is not None:
                    w.add_rope_scaling_yarn_beta_fast(beta_fast)
                if (beta_slow := rope.get("beta_slow")) is not None:
                    w.add_rope_scaling_yarn_beta_slow(beta_slow)
        if (theta := rope.get("rope_theta")) is not None:
            w.add_rope_freq_base(theta)
        if (local_theta := self.rope_parameters.get("sliding_attention", {}).get("rope_theta")) is not None:
            w.add_rope_freq_base_swa(local_theta)
        if (eps := self.find_hparam(["rms_norm_eps", "norm_eps"], optional=True)) is not None:
            w.add_layer_norm_rms_eps(eps)
        if (n_experts := self.find_hparam(["num_local_experts", "num_experts", "n_routed_experts"], optional=True)) is not None:
            w.add_expert_count(n_experts)
        if (n_used := self.find_hparam(["num_experts_per_tok", "num_experts_per_token", "top_k_experts"], optional=True)) is not None:
            w.add_expert_used_count(n_used)
        if (groups := h.get("n_group")) is not None:
            w.add_expert_group_count(groups)
        if (groups_used := h.get("topk_group")) is not None:
            w.add_expert_group_used_count(groups_used)
        if (score := self.find_hparam(["score_function", "scoring_func", "score_func"], optional=True)) is not None:
            w.add_expert_gating_func({"sigmoid": gguf.ExpertGatingFuncType.SIGMOID, "softmax": gguf.ExpertGatingFuncType.SOFTMAX}[score])
        if (head_dim := h.get("head_dim")) is not None:
            w.add_key_length(head_dim)
            w.add_value_length(head_dim)
        w.add_file_type(gguf.LlamaFileType.ALL_F32)

    def set_vocab(self) -> None:
        """The minimal byte-level vocabulary (see the module docstring)."""
        symbols = bytes_to_unicode()
        letters = "abcdefghijklmnop"
        merges = [f"{a} {b}" for a in letters for b in letters]
        tokens = symbols + [m.replace(" ", "") for m in merges]
        assert len(tokens) == self.hparams["vocab_size"] == 512
        self.writer.add_tokenizer_model("gpt2")
        self.writer.add_tokenizer_pre("default")
        self.writer.add_token_list(tokens)
        self.writer.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
        self.writer.add_token_merges(merges)

    # -- tensors -------------------------------------------------------------------------------

    def filter_tensor_name(self, name: str) -> str | None:
        """TextModel.filter_tensors: `e_score_correction_bias` -> `e_score_correction.bias`."""
        if name.endswith("e_score_correction_bias"):
            name = name.replace("e_score_correction_bias", "e_score_correction.bias")
        return name

    def map_tensor_name(self, name: str) -> str:
        mapped = self.tensor_map.get_name(key=name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ValueError(f"cannot map tensor {name!r}")
        return mapped

    def modify_tensors(self, data: np.ndarray, name: str, bid: int | None) -> Iterator[tuple[str, np.ndarray]]:
        yield self.map_tensor_name(name), data

    def add_extra_tensors(self) -> None:
        """Tensors that are not float conversions of one Hugging Face tensor (GPT-OSS's MXFP4)."""

    def stack_experts(self, bid: int, template: str, weights: Iterable[str], n_experts: int) -> Iterator[tuple[str, np.ndarray]]:
        """Stacks `template.format(bid, xid, w)` of every expert into one [experts, rows, cols] tensor."""
        for w in weights:
            yield w, np.stack([self.tensors[template.format(bid=bid, xid=xid, w=w)] for xid in range(n_experts)], axis=0)

    def write(self, path: Path) -> None:
        self.writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[self.model_arch])
        self.writer.add_type(gguf.GGUFType.MODEL)
        self.writer.add_name(path.stem)
        self.writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        self.set_gguf_parameters()
        self.set_vocab()
        names = sorted(self.tensors)
        for name in names:
            filtered = self.filter_tensor_name(name)
            if filtered is None:
                continue
            bid = None
            parts = filtered.split(".")
            if len(parts) > 2 and parts[0] == "model" and parts[1] == "layers":
                bid = int(parts[2])
            for new_name, data in self.modify_tensors(self.tensors[name], filtered, bid):
                self.writer.add_tensor(new_name, np.ascontiguousarray(data, dtype=np.float32))
        self.add_extra_tensors()
        self.writer.write_header_to_file()
        self.writer.write_kv_data_to_file()
        self.writer.write_tensors_to_file()
        self.writer.close()


class LlamaConverter(Converter):
    """LlamaModel (also Mixtral): vocab_size, rope dimension count, Q/K permutation, stacked w1/w2/w3."""

    model_arch = gguf.MODEL_ARCH.LLAMA

    def set_gguf_parameters(self) -> None:
        super().set_gguf_parameters()
        h = self.hparams
        self.writer.add_vocab_size(h["vocab_size"])
        rope_dim = h.get("head_dim") or h["hidden_size"] // h["num_attention_heads"]
        self.writer.add_rope_dimension_count(rope_dim)

    @staticmethod
    def permute(weights: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
        if n_head_kv is not None and n_head != n_head_kv:
            n_head = n_head_kv
        return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
                .swapaxes(1, 2)
                .reshape(weights.shape))

    def modify_tensors(self, data, name, bid):
        n_head = self.hparams["num_attention_heads"]
        n_kv_head = self.hparams["num_key_value_heads"]
        if name.endswith(("q_proj.weight", "q_proj.bias")):
            data = self.permute(data, n_head, n_head)
        if name.endswith(("k_proj.weight", "k_proj.bias")):
            data = self.permute(data, n_head, n_kv_head)
        if "block_sparse_moe.experts" in name:
            # Stacked once, when the last expert tensor of the layer comes by.
            n_experts = self.hparams["num_local_experts"]
            if name != f"model.layers.{bid}.block_sparse_moe.experts.{n_experts - 1}.w3.weight":
                return
            for wid, stacked in self.stack_experts(bid, "model.layers.{bid}.block_sparse_moe.experts.{xid}.{w}.weight", ["w1", "w2", "w3"], n_experts):
                yield self.map_tensor_name(f"layers.{bid}.feed_forward.experts.{wid}.weight"), stacked
            return
        yield from super().modify_tensors(data, name, bid)


class Qwen3MoeConverter(Converter):
    """Qwen2MoeModel / Qwen3MoeModel: expert feed-forward length, stacked experts."""

    model_arch = gguf.MODEL_ARCH.QWEN3MOE

    def set_gguf_parameters(self) -> None:
        super().set_gguf_parameters()
        if (moe := self.hparams.get("moe_intermediate_size")) is not None:
            self.writer.add_expert_feed_forward_length(moe)
        if (shared := self.hparams.get("shared_expert_intermediate_size")) is not None:
            self.writer.add_expert_shared_feed_forward_length(shared)

    def modify_tensors(self, data, name, bid):
        if "experts" in name:
            n_experts = self.find_hparam(["num_local_experts", "num_experts"])
            if name != f"model.layers.{bid}.mlp.experts.{n_experts - 1}.up_proj.weight":
                return
            for w, stacked in self.stack_experts(bid, "model.layers.{bid}.mlp.experts.{xid}.{w}.weight", ["down_proj", "gate_proj", "up_proj"], n_experts):
                yield self.map_tensor_name(f"model.layers.{bid}.mlp.experts.{w}.weight"), stacked
            return
        yield from super().modify_tensors(data, name, bid)


class Gemma2Converter(Converter):
    """Gemma2Model: its own key list (no rope keys), `+1` norms, no lm_head."""

    model_arch = gguf.MODEL_ARCH.GEMMA2

    def set_gguf_parameters(self) -> None:
        w, h = self.writer, self.hparams
        w.add_context_length(h["max_position_embeddings"])
        w.add_embedding_length(h["hidden_size"])
        w.add_block_count(self.block_count)
        w.add_feed_forward_length(h["intermediate_size"])
        w.add_head_count(h["num_attention_heads"])
        w.add_head_count_kv(h.get("num_key_value_heads", h["num_attention_heads"]))
        w.add_layer_norm_rms_eps(h["rms_norm_eps"])
        w.add_key_length(h["head_dim"])
        w.add_value_length(h["head_dim"])
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        w.add_attn_logit_softcapping(h["attn_logit_softcapping"])
        w.add_final_logit_softcapping(h["final_logit_softcapping"])
        w.add_sliding_window(h["sliding_window"])

    def filter_tensor_name(self, name):
        return None if name == "lm_head.weight" else super().filter_tensor_name(name)

    def modify_tensors(self, data, name, bid):
        if name.endswith("norm.weight"):
            data = data + np.float32(1)
        yield from super().modify_tensors(data, name, bid)


class Gemma3Converter(Converter):
    """Gemma3Model: TextModel keys plus Gemma 3's, `+1` (norm_shift) on norms."""

    model_arch = gguf.MODEL_ARCH.GEMMA3

    def set_gguf_parameters(self) -> None:
        super().set_gguf_parameters()
        w, h = self.writer, self.hparams
        w.add_context_length(h.get("max_position_embeddings", 131072))
        w.add_head_count(h.get("num_attention_heads", 8))
        w.add_layer_norm_rms_eps(h.get("rms_norm_eps", 1e-6))
        w.add_key_length(h.get("head_dim", 256))
        w.add_value_length(h.get("head_dim", 256))
        w.add_rope_freq_base(self.rope_parameters.get("full_attention", self.rope_parameters).get("rope_theta", 1_000_000.0))
        assert h.get("attn_logit_softcapping") is None
        if (cap := h.get("final_logit_softcapping")):
            w.add_final_logit_softcapping(cap)
        if h.get("sliding_window_pattern") != 1:
            w.add_sliding_window(h["sliding_window"])
        w.add_head_count_kv(h.get("num_key_value_heads", 4))

    def modify_tensors(self, data, name, bid):
        # (The converter also cuts token_embd to the tokenizer's size: 512 = vocab_size here.)
        if name.endswith("norm.weight"):
            data = data + np.float32(1)
        yield from super().modify_tensors(data, name, bid)


class DeepseekV2Converter(Converter):
    """DeepseekV2Model (DeepSeek V2/V3 -> arch deepseek2)."""

    model_arch = gguf.MODEL_ARCH.DEEPSEEK2

    def set_gguf_parameters(self) -> None:
        # MLA is written as MQA: one KV head (the tensors still use the real head count, `self.heads`).
        self.hparams["num_key_value_heads"] = 1
        self.hparams["rms_norm_eps"] = self.hparams.get("rms_norm_eps", 1e-6)
        super().set_gguf_parameters()
        w, h = self.writer, self.hparams
        has_moe = h.get("n_routed_experts") is not None
        first_dense = h.get("first_k_dense_replace")
        if first_dense is None:
            first_dense = h["num_hidden_layers"] if not has_moe else 0
        w.add_leading_dense_block_count(first_dense)
        kv_lora_rank = h.get("kv_lora_rank", 512)
        w.add_vocab_size(h["vocab_size"])
        if h.get("q_lora_rank") is not None:
            w.add_q_lora_rank(h["q_lora_rank"])
        w.add_kv_lora_rank(kv_lora_rank)
        w.add_key_length(kv_lora_rank + h["qk_rope_head_dim"])
        w.add_value_length(kv_lora_rank)
        w.add_key_length_mla(h["qk_nope_head_dim"] + h["qk_rope_head_dim"])
        w.add_value_length_mla(h["v_head_dim"])
        w.add_expert_feed_forward_length(self.find_hparam(["moe_intermediate_size", "intermediate_size"]))
        if (n_routed := h.get("n_routed_experts")) is not None:
            w.add_expert_count(n_routed)
        w.add_expert_shared_count(h.get("n_shared_experts", 0))
        if (scale := h.get("routed_scaling_factor")) is not None:
            w.add_expert_weights_scale(scale)
        if h.get("norm_topk_prob"):
            w.add_expert_weights_norm(True)
        w.add_rope_dimension_count(h["qk_rope_head_dim"])
        if (mscale_all := self.rope_parameters.get("mscale_all_dim")) is not None:
            w.add_rope_scaling_yarn_log_mul(0.1 * mscale_all)

    def write(self, path: Path) -> None:
        # The converter processes tensors before it writes the metadata: kv_b is split with the
        # config's num_key_value_heads (4), not the 1 written to the file.
        self.heads = self.hparams["num_key_value_heads"]
        super().write(path)

    def filter_tensor_name(self, name):
        if self.hparams.get("tie_word_embeddings", False) and name == "lm_head.weight":
            return None
        return super().filter_tensor_name(name)

    def modify_tensors(self, data, name, bid):
        if "mlp.experts" in name:
            n_experts = self.hparams["n_routed_experts"]
            if name != f"model.layers.{bid}.mlp.experts.{n_experts - 1}.up_proj.weight":
                return
            for w, stacked in self.stack_experts(bid, "model.layers.{bid}.mlp.experts.{xid}.{w}.weight", ["down_proj", "gate_proj", "up_proj"], n_experts):
                yield self.map_tensor_name(f"model.layers.{bid}.mlp.experts.{w}.weight"), stacked
            return
        if name.endswith("kv_b_proj.weight"):
            h = self.hparams
            nope, v = h["qk_nope_head_dim"], h["v_head_dim"]
            assert data.shape[0] == self.heads * (nope + v)
            kv_b = data.reshape(self.heads, nope + v, data.shape[-1])
            k_b, v_b = kv_b[:, :nope, :], kv_b[:, nope:, :]
            yield self.map_tensor_name(name.replace("kv_b_proj", "k_b_proj")), k_b.transpose(0, 2, 1)
            yield self.map_tensor_name(name.replace("kv_b_proj", "v_b_proj")), v_b
            return
        yield from super().modify_tensors(data, name, bid)


class GptOssConverter(Converter):
    """GptOssModel with float (not MXFP4) experts."""

    model_arch = gguf.MODEL_ARCH.GPT_OSS

    def set_gguf_parameters(self) -> None:
        super().set_gguf_parameters()
        self.writer.add_sliding_window(self.hparams["sliding_window"])
        self.writer.add_expert_feed_forward_length(self.hparams["intermediate_size"])

    def filter_tensor_name(self, name):
        if "sinks" in name:
            name += ".weight"
        return super().filter_tensor_name(name)

    def write(self, path: Path) -> None:
        # generate_extra_tensors: MXFP4 blocks + scales -> stacked GGML_TYPE_MXFP4 tensors.
        self.mxfp4: list[tuple[str, np.ndarray]] = []
        for name in sorted(self.tensors):
            if name.endswith("mlp.experts.down_proj_scales"):
                blocks = self.tensors[name.replace("_scales", "_blocks")]
                self.mxfp4.append((self.map_tensor_name(name.replace("_scales", ".weight")), repack_mxfp4(blocks, self.tensors[name])))
            elif name.endswith("mlp.experts.gate_up_proj_scales"):
                blocks, scales = self.tensors[name.replace("_scales", "_blocks")], self.tensors[name]
                self.mxfp4.append((self.map_tensor_name(name.replace("gate_up_proj_scales", "gate_proj.weight")), repack_mxfp4(blocks[:, ::2], scales[:, ::2])))
                self.mxfp4.append((self.map_tensor_name(name.replace("gate_up_proj_scales", "up_proj.weight")), repack_mxfp4(blocks[:, 1::2], scales[:, 1::2])))
        super().write(path)

    def add_extra_tensors(self) -> None:
        for name, data in self.mxfp4:
            self.writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType.MXFP4)

    def modify_tensors(self, data, name, bid):
        if name.endswith(("_blocks", "_scales")):
            return  # repacked in write()
        if "down_proj" in name:
            if name.endswith("_bias"):
                name = name.replace("down_proj_bias", "down_proj.bias")
            else:
                name = name.replace("down_proj", "down_proj.weight")
                data = np.swapaxes(data, -1, -2)
        if "gate_up_proj" in name:
            if name.endswith("_bias"):
                yield from super().modify_tensors(data[..., ::2], name.replace("gate_up_proj_bias", "gate_proj.bias"), bid)
                yield from super().modify_tensors(data[..., 1::2], name.replace("gate_up_proj_bias", "up_proj.bias"), bid)
            else:
                data = np.swapaxes(data, -1, -2)
                yield from super().modify_tensors(data[:, ::2, :], name.replace("gate_up_proj", "gate_proj.weight"), bid)
                yield from super().modify_tensors(data[:, 1::2, :], name.replace("gate_up_proj", "up_proj.weight"), bid)
        else:
            yield from super().modify_tensors(data, name, bid)


# ----------------------------------------------------------------------------------------------
# MXFP4

FP4_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32)


def quantize_mxfp4(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`[..., cols]` floats -> Hugging Face MXFP4 `blocks [..., cols/32, 16]` and `scales [..., cols/32]`
    (uint8): per 32-block the smallest E8M0 scale 2^(e-127) with max|x| / scale <= 6, each element
    rounded to the nearest FP4 value (ties to the smaller magnitude); byte j = element 2j (low nibble)
    | element 2j+1 (high nibble)."""
    groups = weights.reshape(*weights.shape[:-1], -1, 32).astype(np.float64)
    amax = np.abs(groups).max(axis=-1)
    with np.errstate(divide="ignore"):
        exponent = np.where(amax > 0, np.ceil(np.log2(amax / 6.0)), -127.0)
    scales = np.clip(exponent + 127, 0, 254).astype(np.uint8)
    scaled = groups / np.exp2(scales.astype(np.float64) - 127)[..., None]
    assert np.abs(scaled).max() <= 6.0
    magnitude = np.abs(np.abs(scaled)[..., None] - FP4_VALUES[:8].astype(np.float64)).argmin(axis=-1)
    codes = (magnitude + 8 * (scaled < 0)).astype(np.uint8)
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return blocks.astype(np.uint8), scales


def dequantize_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Inverse of the packing of `quantize_mxfp4` (transformers' convert_moe_packed_tensors): `[..., cols]` floats."""
    codes = np.stack([blocks & 0x0F, blocks >> 4], axis=-1).reshape(*blocks.shape[:-1], 32)
    values = FP4_VALUES[codes] * np.exp2(scales.astype(np.float32) - 127)[..., None]
    return values.reshape(*blocks.shape[:-2], -1).astype(np.float32)


def repack_mxfp4(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """GptOssModel.repack_mxfp4: `[E, rows, cols/32, 16]` + `[E, rows, cols/32]` -> ggml block_mxfp4
    bytes `[E, rows, cols/32 * 17]` (scale byte, then byte j = element j | element j+16 << 4)."""
    codes = np.stack([blocks & 0x0F, blocks >> 4], axis=-1).reshape(*blocks.shape[:-1], 32)
    qs = codes[..., :16] | (codes[..., 16:] << 4)
    packed = np.concatenate([scales[..., None], qs.astype(np.uint8)], axis=-1)
    return packed.reshape(*blocks.shape[:-2], -1)


def write_mxfp4_folders() -> None:
    """gpt_oss_mxfp4/ (MXFP4 experts) and gpt_oss_mxfp4_dequantized/ (the same values in float)."""
    source = TINY / "gpt_oss"
    config = json.loads((source / "config.json").read_text())
    tensors = read_safetensors(source / "model.safetensors")
    quantized: dict[str, np.ndarray] = {}
    dequantized: dict[str, np.ndarray] = {}
    for name in sorted(tensors):
        data = tensors[name]
        if name.endswith(("mlp.experts.gate_up_proj", "mlp.experts.down_proj")):
            # [E, in, out] (x @ W) -> rows = output features, as the checkpoints store blocks.
            blocks, scales = quantize_mxfp4(np.swapaxes(data, -1, -2))
            quantized[name + "_blocks"] = blocks
            quantized[name + "_scales"] = scales
            dequantized[name] = np.ascontiguousarray(np.swapaxes(dequantize_mxfp4(blocks, scales), -1, -2))
        else:
            quantized[name] = data
            dequantized[name] = data
    for folder, contents, extra in [
        ("gpt_oss_mxfp4", quantized, {"quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}}),
        ("gpt_oss_mxfp4_dequantized", dequantized, {}),
    ]:
        target = HERE / folder
        target.mkdir(exist_ok=True)
        (target / "config.json").write_text(json.dumps({**config, **extra}, indent=2, sort_keys=True) + "\n")
        write_safetensors(target / "model.safetensors", contents)
        print(f"wrote {target.relative_to(HERE.parent.parent.parent)}/")


# (output name, Hugging Face folder, converter, config changes before conversion)
MODELS = [
    ("llama", TINY / "llama", LlamaConverter, None),
    ("mixtral", TINY / "mixtral", LlamaConverter, None),
    ("qwen3_moe", TINY / "qwen3_moe", Qwen3MoeConverter, None),
    ("gemma2", TINY / "gemma2", Gemma2Converter, None),
    ("gemma3", TINY / "gemma3", Gemma3Converter, None),
    ("deepseek_v3", TINY / "deepseek_v3", DeepseekV2Converter, None),
    ("deepseek_v3_sigmoid", TINY / "deepseek_v3", DeepseekV2Converter, {"scoring_func": "sigmoid", "topk_method": "noaux_tc"}),
    ("gpt_oss", TINY / "gpt_oss", GptOssConverter, None),
    ("gpt_oss_mxfp4", HERE / "gpt_oss_mxfp4", GptOssConverter, None),
]


def main() -> int:
    logging.basicConfig(level=logging.ERROR)  # GGUFWriter warns on the keys the converter writes twice
    write_mxfp4_folders()
    for out, folder, converter, changes in MODELS:
        path = HERE / f"{out}.gguf"
        converter(folder, changes).write(path)
        print(f"wrote {path.relative_to(HERE.parent.parent.parent)} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
