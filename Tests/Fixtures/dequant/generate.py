"""Regenerates the dequantization fixtures for Tests/FormatsTests/DequantizeTests.swift.

For each type: `<name>.bin` holds random raw blocks (random bytes, with every float16 scale field
set to a random finite value, a few of them subnormal), `<name>.f32` the float32 values that
gguf-py's reference `gguf.quants.dequantize` gives for them, little-endian.
Run: python3 generate.py  (needs `pip install gguf numpy`; the tests themselves do not need Python).
"""
import os
import numpy as np
from gguf import GGMLQuantizationType as T, GGML_QUANT_SIZES
from gguf.quants import dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(20240611)

# Byte offsets of the float16 scale fields inside one block.
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def random_scale():
    # Mostly moderate magnitudes of either sign, sometimes a subnormal or a large value.
    r = rng.random()
    if r < 0.1:
        bits = int(rng.integers(1, 0x400)) | (int(rng.integers(0, 2)) << 15)  # subnormal
        return np.uint16(bits)
    if r < 0.2:
        v = rng.uniform(100, 60000) * rng.choice([-1, 1])
    else:
        v = rng.uniform(1e-4, 2.0) * rng.choice([-1, 1])
    return np.float16(v).view(np.uint16)


def write(name, raw, expected):
    raw.astype(np.uint8).tofile(os.path.join(HERE, name + ".bin"))
    np.asarray(expected, dtype="<f4").tofile(os.path.join(HERE, name + ".f32"))


for qtype, fields in F16_FIELDS.items():
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n_blocks = 8 if block_size == 32 else 3
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for b in range(n_blocks):
        for off in fields:
            raw[b, off:off + 2] = np.frombuffer(random_scale().tobytes(), dtype=np.uint8)
    expected = dequantize(raw.reshape(-1), qtype)
    assert np.all(np.isfinite(expected)), qtype.name
    write(qtype.name.lower(), raw.reshape(-1), expected)

# F16: random finite values of all magnitudes plus specials (no signaling NaNs: hardware
# conversions may quiet them).
bits = rng.integers(0, 0x10000, size=256, dtype=np.uint16)
bits = bits[(bits & 0x7C00) != 0x7C00]
specials = np.array([0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF,
                     0x7C00, 0xFC00, 0x7E00, 0xFE01, 0x3C00, 0xBC00, 0x3555], dtype=np.uint16)
bits = np.concatenate([specials, bits])
write("f16", bits.view(np.uint8), dequantize(bits.view(np.uint8), T.F16).view(np.uint32).view("<f4"))

# BF16: random bits (any payload: the conversion is a shift), plus specials.
bits = rng.integers(0, 0x10000, size=256, dtype=np.uint16)
bits = np.concatenate([np.array([0x0000, 0x8000, 0x0001, 0x7F80, 0xFF80, 0x7FC0, 0x3F80], dtype=np.uint16), bits])
write("bf16", bits.view(np.uint8), dequantize(bits.view(np.uint8), T.BF16))

# MXFP4: random codes, with the E8M0 exponent byte (offset 0) drawn from the extremes (0 and 1 give
# subnormal scales, 254 and 255 overflow to infinity for the larger codes) and moderate values.
# Appended last so the draws above, and their fixtures, stay as they were.
block_size, type_size = GGML_QUANT_SIZES[T.MXFP4]
exponents = np.array([0, 1, 2, 127, 128, 254, 255] + list(rng.integers(100, 140, size=9)), dtype=np.uint8)
raw = rng.integers(0, 256, size=(len(exponents), type_size), dtype=np.uint8)
raw[:, 0] = exponents
with np.errstate(over="ignore"):
    expected = dequantize(raw.reshape(-1), T.MXFP4)
write("mxfp4", raw.reshape(-1), expected)
