// Lane shuffles for the matmul kernels' transposing reductions (`Product.foldHalves`).
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
