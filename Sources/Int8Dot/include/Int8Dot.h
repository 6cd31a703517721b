// Integer dot products of GGML weight blocks with 8-bit activations (`--activations int8`).
//
// The innermost loop of that lossy mode lives in C because it needs the byte multiply-add
// instructions (AVX2's vpmaddubsw / vpmaddwd, or VNNI's vpdpbusd where the CPU has it), which a
// Swift SIMD version of the pair multiply-add does not compile to (it gives widening multiplies,
// vpmulld and shuffles).
//
// Activations are quantized per 32 consecutive values, as llama.cpp's Q8_0/Q8_1 do: one row of
// `cols` floats becomes `cols` int8 values, then `cols / 32` float scales `d` (max |x| / 127), then
// `cols / 32` floats `s = d * sum(q)` (used by the weight types with an offset, Q4_1 and Q5_1),
// then three int32 per block: `-128 * sum(q)`, `-32 * sum(q[0..<16])`, `-32 * sum(q[16..<32])`.
// Where VNNI's `vpdpbusd` (unsigned weight bytes times signed activation bytes) is used, the signed
// weight types are packed plus a bias (Q8_0 + 128, Q6_K's q - 32 + 32) and a block's integer sums
// start from those terms instead of zero, which gives exactly the signed products.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Weight block types with an int8 kernel (the GGML type numbers).
enum {
    PAGODA_I8_Q4_0 = 2,
    PAGODA_I8_Q4_1 = 3,
    PAGODA_I8_Q5_0 = 6,
    PAGODA_I8_Q5_1 = 7,
    PAGODA_I8_Q8_0 = 8,
    /// Q4_K and Q6_K, packed from their wide 32-element layouts: Q4_K as `scale: f32`,
    /// `offset: f32`, `qs: [16] u8` (Q4_1's nibble order); Q6_K as `scaleLow: f32`,
    /// `scaleHigh: f32` (elements 0..<16 and 16..<32), then `q - 32` as 32 signed bytes.
    PAGODA_I8_Q4_K = 12,
    PAGODA_I8_Q6_K = 14,
};

/// Bytes one quantized row of `cols` values takes (`cols` a multiple of 32).
static inline size_t pagoda_i8_row_bytes(size_t cols) { return cols + 20 * (cols / 32); }

/// Quantizes `tokens` rows of `cols` floats (`x`, rows `x_stride` floats apart) into `out`
/// (rows `pagoda_i8_row_bytes(cols)` bytes apart). Round to nearest, ties to even.
void pagoda_i8_quantize(const float *x, size_t x_stride, size_t tokens, size_t cols, uint8_t *out);

/// Weight rows per packed group: one per lane of a float32 vector, 16 where the build has
/// AVX-512 with VNNI (zmm), else 8. Swift code asks `pagoda_i8_group_rows()`, which is the value
/// this file was compiled with, rather than the macro.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512VNNI__) && defined(__AVX2__) && defined(__FMA__)
#define PAGODA_I8_GROUP 16
#else
#define PAGODA_I8_GROUP 8
#endif

/// `PAGODA_I8_GROUP` as the kernels were built.
size_t pagoda_i8_group_rows(void);

/// Bytes of one block (32 columns) of a packed group of G = `PAGODA_I8_GROUP` rows of `type` (Q4_0,
/// Q4_1, Q5_0, Q5_1, Q8_0, Q4_K or Q6_K), or 0 for another type. A packed group block holds the G
/// rows' scales `d` (float16; float32 for Q4_K and Q6_K), their offsets `m` (Q4_1, Q5_1 float16;
/// Q4_K float32) or second-half scales (Q6_K), then the quants in chunks of 4G bytes: for
/// Q4_0/Q4_1/Q5_0/Q4_K four chunks whose lane r (bytes 4r..4r+3) is stored bytes 4c..4c+3 of row r
/// (elements 4c.. in the low nibbles, 16+4c.. in the high ones), and for Q5_0 then one chunk of
/// fifth bits (bit 2c of byte 4r + i: element 4c + i of row r; bit 2c + 1: element 16 + 4c + i);
/// for Q5_1 (unpacked to 0...31), Q8_0 and Q6_K eight chunks whose lane r is row r's weights
/// 4k..4k+3 (Q8_0 and Q6_K plus their bias where the build has VNNI; see the row layout above).
/// The sizes equal G stored blocks, so packing costs no memory.
size_t pagoda_i8_group_block_bytes(int type);

/// Packs `blocks` blocks of `valid_rows` (at most `PAGODA_I8_GROUP`) weight rows of `type` into one group
/// (`blocks * pagoda_i8_group_block_bytes(type)` bytes at `out`); row r's blocks start at
/// `rows[r]`, `block_strides[r]` bytes apart. Missing rows are zero. Returns 0, or -1.
int pagoda_i8_pack_group(int type, const uint8_t *const rows[PAGODA_I8_GROUP], const size_t block_strides[PAGODA_I8_GROUP],
                         size_t valid_rows, size_t blocks, uint8_t *out);

/// Row `lane` of a packed group as floats, bit for bit ggml's `dequantize_row_*` of the stored row.
void pagoda_i8_dequantize_row(int type, const uint8_t *packed, size_t blocks, size_t lane, float *out);

/// `out[t * out_stride + r]` = the product of the group's row r (r < `rows` <= G) with quantized
/// activation row t, for `tokens` (1 to 4) rows starting at `x`, `x_stride` bytes apart. Each
/// token's results are computed the same way whatever `tokens` is. Returns 0, or -1.
int pagoda_i8_gemm(int type, const uint8_t *packed, size_t blocks, const uint8_t *x, size_t x_stride, size_t tokens,
                   float *out, size_t out_stride, size_t rows);

#ifdef __cplusplus
}
#endif

/// How far ahead of a decode product's weight stream the kernels prefetch (the Swift float kernels
/// and the int8 kernel alike). Without it a decode step on the AVX2 EPYC waited on memory between
/// the hardware prefetcher's runs; tg128 with it, against none, 2048 and per-type distances:
/// BENCHMARKS.md, 2026-12-01 (late session).
#define PAGODA_PREFETCH_BYTES 4096

/// Asks for the cache line at `p` (a read, kept in every level). Never faults, so it may point past
/// the end of the weights.
static inline void pagoda_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

/// Asks for the cache line at `p` into L2 and the levels below, not L1 (`prefetcht1`): for data
/// needed a while later, so that it does not evict what L1 holds for the work in between. Decode
/// attention fetches its next K/V tile this way (BENCHMARKS.md, 2026-12-03).
static inline void pagoda_prefetch_l2(const void *p) { __builtin_prefetch(p, 0, 2); }
