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
