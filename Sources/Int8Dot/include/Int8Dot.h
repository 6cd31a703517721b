// Integer dot products of GGML weight blocks with 8-bit activations (`--activations int8`).
//
// The innermost loop of that lossy mode lives in C because it needs the byte multiply-add
// instructions (AVX2's vpmaddubsw / vpmaddwd), which a Swift SIMD version of the pair
// multiply-add does not compile to (it gives widening multiplies, vpmulld and shuffles).
//
// Activations are quantized per 32 consecutive values, as llama.cpp's Q8_0/Q8_1 do: one row of
// `cols` floats becomes `cols` int8 values, then `cols / 32` float scales `d` (max |x| / 127), then
// `cols / 32` floats `s = d * sum(q)` (used by the weight types with an offset, Q4_1 and Q5_1).
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
};

/// Bytes one quantized row of `cols` values takes (`cols` a multiple of 32).
static inline size_t pagoda_i8_row_bytes(size_t cols) { return cols + 8 * (cols / 32); }

/// Quantizes `tokens` rows of `cols` floats (`x`, rows `x_stride` floats apart) into `out`
/// (rows `pagoda_i8_row_bytes(cols)` bytes apart). Round to nearest, ties to even.
void pagoda_i8_quantize(const float *x, size_t x_stride, size_t tokens, size_t cols, uint8_t *out);

/// `out[t * out_stride] = dot(weight row, dequantized activation row t)` for `tokens` (1 to 4)
/// quantized activation rows starting at `x` (`x_stride` bytes apart). The weight row has
/// `blocks` blocks of `type`, `block_stride` bytes apart starting at `w`. Each token's result
/// is computed the same way whatever `tokens` is. Returns 0, or -1 for an unknown type.
int pagoda_i8_dot(int type, const uint8_t *w, size_t block_stride, size_t blocks,
                  const uint8_t *x, size_t x_stride, size_t tokens, float *out, size_t out_stride);

#ifdef __cplusplus
}
#endif
