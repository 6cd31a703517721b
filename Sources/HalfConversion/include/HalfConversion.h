// One float16 value widened to float32, for the weight decoders' per-block scales.
//
// Swift's `Float(Float16(bitPattern:))` compiles on x86-64 to `vpinsrw $0, mem, %xmmN, %xmmN` and
// `vcvtph2ps`. The insert keeps the other lanes of an arbitrary register, so the conversion waits
// for whatever last wrote that register; in the matmul loops that is an accumulator, which ties
// every block's decoding to the previous block's last multiply-add. Measured on the AVX2 EPYC:
// Q8_0 decode products 25% and prefill products 17% slower than with an independent conversion.
// Here the value travels through a general register (`vmovd` writes the whole vector register),
// so nothing waits.
#pragma once
#include <stdint.h>

/// float16 bits to float32, exactly (subnormals, infinities and NaNs included).
static inline float pagoda_half_to_float(uint16_t bits) {
#if defined(__x86_64__) && defined(__F16C__)
    float result;
    __asm__("vmovd %1, %0\n\tvcvtph2ps %0, %0" : "=x"(result) : "r"((uint32_t)bits));
    return result;
#else
    _Float16 value;
    __builtin_memcpy(&value, &bits, sizeof value);
    return (float)value;
#endif
}

/// Two consecutive float16 values at `p` (a block's scale and offset) widened to float32 with one
/// 32-bit load and one conversion: lanes 0 and 1 of the result (2 and 3 are zero). Exact, as above.
typedef float pagoda_float4 __attribute__((ext_vector_type(4)));
static inline pagoda_float4 pagoda_half_pair_to_float(const void *p) {
#if defined(__x86_64__) && defined(__F16C__)
    pagoda_float4 result;
    __asm__("vmovd %1, %0\n\tvcvtph2ps %0, %0" : "=x"(result) : "m"(*(const uint32_t *)p));
    return result;
#else
    uint16_t bits[2];
    __builtin_memcpy(bits, p, sizeof bits);
    pagoda_float4 result = {pagoda_half_to_float(bits[0]), pagoda_half_to_float(bits[1]), 0, 0};
    return result;
#endif
}
