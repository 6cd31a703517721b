// Lane shuffles for the transposing reductions of the matmul kernels (`Product.foldHalves`) and
// of the attention scores (`reduceTransposed`), and the weight decoders' table lookups (below).
//
// Swift has no shuffle of two vectors: built lane by lane, LLVM turned them into lane extracts
// and scalar adds on AVX-512. Clang's `__builtin_shufflevector` is one shuffle instruction (or
// two) on every target, with no per-ISA intrinsics.
//
// Each function treats `x` and `y` as accumulators of `width` lanes side by side and halves them
// all: lane i of a new accumulator is lane i plus lane i + width/2 of the old one; x's come first.
#pragma once

typedef float pagoda_lanes16 __attribute__((ext_vector_type(16)));
typedef float pagoda_lanes8 __attribute__((ext_vector_type(8)));

/// One accumulator of 16 lanes in each of `x` and `y` -> two of 8.
static inline pagoda_lanes16 pagoda_fold16_width16(pagoda_lanes16 x, pagoda_lanes16 y) {
    return __builtin_shufflevector(x, y, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
         + __builtin_shufflevector(x, y, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
}

/// Two accumulators of 8 lanes in each -> four of 4.
static inline pagoda_lanes16 pagoda_fold16_width8(pagoda_lanes16 x, pagoda_lanes16 y) {
    return __builtin_shufflevector(x, y, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27)
         + __builtin_shufflevector(x, y, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
}

/// Four accumulators of 4 lanes in each -> eight of 2.
static inline pagoda_lanes16 pagoda_fold16_width4(pagoda_lanes16 x, pagoda_lanes16 y) {
    return __builtin_shufflevector(x, y, 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29)
         + __builtin_shufflevector(x, y, 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
}

/// Eight accumulators of 2 lanes in each -> sixteen sums.
static inline pagoda_lanes16 pagoda_fold16_width2(pagoda_lanes16 x, pagoda_lanes16 y) {
    return __builtin_shufflevector(x, y, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
         + __builtin_shufflevector(x, y, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

/// One accumulator of 8 lanes in each -> two of 4.
static inline pagoda_lanes8 pagoda_fold8_width8(pagoda_lanes8 x, pagoda_lanes8 y) {
    return __builtin_shufflevector(x, y, 0, 1, 2, 3, 8, 9, 10, 11) + __builtin_shufflevector(x, y, 4, 5, 6, 7, 12, 13, 14, 15);
}

/// Two accumulators of 4 lanes in each -> four of 2.
static inline pagoda_lanes8 pagoda_fold8_width4(pagoda_lanes8 x, pagoda_lanes8 y) {
    return __builtin_shufflevector(x, y, 0, 1, 4, 5, 8, 9, 12, 13) + __builtin_shufflevector(x, y, 2, 3, 6, 7, 10, 11, 14, 15);
}

/// Four accumulators of 2 lanes in each -> eight sums.
static inline pagoda_lanes8 pagoda_fold8_width2(pagoda_lanes8 x, pagoda_lanes8 y) {
    return __builtin_shufflevector(x, y, 0, 2, 4, 6, 8, 10, 12, 14) + __builtin_shufflevector(x, y, 1, 3, 5, 7, 9, 11, 13, 15);
}

// Table lookups for the weight decoders (`WeightChunks.swift`): a 4- or 5-bit quantized value
// picks its weight from the 16 or 32 weights a block's scale (and offset) can give, one permute
// per 16 weights instead of a mask, an int-to-float conversion and a multiply-add. Only the low
// 4 (5) bits of each index count, so callers need not mask them.

typedef unsigned int pagoda_indices16 __attribute__((ext_vector_type(16)));

#if defined(__AVX512F__)
typedef float pagoda_m512 __attribute__((vector_size(64)));
typedef int pagoda_m512i __attribute__((vector_size(64)));
#endif

/// Lane i: `table[index[i] % 16]` (`vpermps` with AVX-512F).
static inline pagoda_lanes16 pagoda_lookup16(pagoda_lanes16 table, pagoda_indices16 index) {
#if defined(__AVX512F__)
    return (pagoda_lanes16)__builtin_ia32_permvarsf512((pagoda_m512)table, (pagoda_m512i)index);
#else
    pagoda_lanes16 result;
    for (int i = 0; i < 16; i++) result[i] = table[index[i] % 16];
    return result;
#endif
}

/// Lane i: entry `index[i] % 32` of `low` followed by `high` (`vpermt2ps` with AVX-512F).
static inline pagoda_lanes16 pagoda_lookup32(pagoda_lanes16 low, pagoda_lanes16 high, pagoda_indices16 index) {
#if defined(__AVX512F__)
    return (pagoda_lanes16)__builtin_ia32_vpermi2varps512((pagoda_m512)low, (pagoda_m512i)index, (pagoda_m512)high);
#else
    pagoda_lanes16 result;
    for (int i = 0; i < 16; i++) result[i] = index[i] % 32 < 16 ? low[index[i] % 16] : high[index[i] % 16];
    return result;
#endif
}

/// The lanes 0, 1, ..., 15, hidden from the optimizer: folded into a table's multiply-add, the
/// constant lanes let LLVM split it into scalar pieces (lane 0 is just the offset, lane 1 one add)
/// and reassemble them with permutes, which took longer than the conversions the lookups replace.
static inline pagoda_lanes16 pagoda_opaque_values16(void) {
    pagoda_lanes16 values = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
#if defined(__AVX512F__)
    __asm__("" : "+v"(values));
#endif
    return values;
}

/// Lane i: `i * scale + offset` with one rounding: the weights of values 0...15 (Q4_1, Q4_K).
static inline pagoda_lanes16 pagoda_table16_fused(float scale, float offset) {
    return __builtin_elementwise_fma(pagoda_opaque_values16(), (pagoda_lanes16)scale, (pagoda_lanes16)offset);
}

/// Lane i: `(i + bias) * scale`: the weights of values 0...15 less a bias (Q4_0, Q5_0).
static inline pagoda_lanes16 pagoda_table16_scaled(float bias, float scale) {
    return (pagoda_opaque_values16() + bias) * scale;
}
