// See Int8Dot.h. Two implementations of the same arithmetic: SIMD, and portable C. The SIMD one
// is AVX2 (8-row groups in ymm, `vpmaddubsw`), with VNNI's vpdpbusd where present, and with
// AVX-512 VNNI 16-row groups in zmm (each when the build targets a CPU that has it). Either way a
// (row, token) result depends only on that row and that token, never on how many tokens or rows
// share the call, and the group size never changes it.
#include "Int8Dot.h"

#define PAGODA_I8_TILE 4

#include <math.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define PAGODA_I8_AVX2 1
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
/// 256-bit `vpdpbusd` (AVX512-VNNI with VL, or AVX-VNNI): byte products summed into int32
/// lanes in one step.
#define PAGODA_I8_VNNI 1
#define pagoda_dpbusd _mm256_dpbusd_epi32
#elif defined(__AVXVNNI__)
#define PAGODA_I8_VNNI 1
#define pagoda_dpbusd _mm256_dpbusd_avx_epi32
#endif
#endif

#ifdef PAGODA_I8_VNNI
/// Signed weights (Q8_0, Q6_K) are packed plus a bias (`signed_bias`) so that `vpdpbusd` takes
/// them as its unsigned operand directly; each block's sums then start from the activation row's
/// `-bias * sum(q)` terms. Without VNNI the pair sums of `vpmaddubsw` could saturate on biased
/// bytes (2 x 255 x 127), so there the weights stay signed and take `vpsignb` instead.
#define PAGODA_I8_BIASED_SIGNED 1
#endif

static inline float half_to_float(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
#if defined(__F16C__)
    return _cvtsh_ss(h);
#else
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF, bits;
    if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else {  // subnormal: normalize
            exponent = 127 - 15 + 1;
            while (!(mantissa & 0x400)) { mantissa <<= 1; exponent--; }
            bits = sign | (exponent << 23) | ((mantissa & 0x3FF) << 13);
        }
    } else if (exponent == 31) {
        bits = sign | 0x7F800000 | (mantissa << 13);
    } else {
        bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
#endif
}

static inline const float *row_scales(const uint8_t *row, size_t blocks) { return (const float *)(row + 32 * blocks); }

/// A quantized row's int32 terms after its scales and sums: `-128 * sum(q)` of each block, then
/// `-32 * sum` of each block's elements 0..<16, then of its elements 16..<32.
static inline __attribute__((unused)) const int32_t *row_bias_terms(const uint8_t *row, size_t blocks) { return (const int32_t *)(row + 40 * blocks); }

// MARK: quantization

void pagoda_i8_quantize(const float *x, size_t x_stride, size_t tokens, size_t cols, uint8_t *out) {
    const size_t blocks = cols / 32, row_bytes = pagoda_i8_row_bytes(cols);
    for (size_t t = 0; t < tokens; t++) {
        const float *in = x + t * x_stride;
        int8_t *q = (int8_t *)(out + t * row_bytes);
        float *d = (float *)(out + t * row_bytes + cols), *s = d + blocks;
        int32_t *all_terms = (int32_t *)(s + blocks), *low_terms = all_terms + blocks, *high_terms = low_terms + blocks;
        for (size_t b = 0; b < blocks; b++) {
            const float *v = in + 32 * b;
            float amax = 0;
#ifdef PAGODA_I8_AVX2
            const __m256 sign = _mm256_set1_ps(-0.0f);
            __m256 m = _mm256_andnot_ps(sign, _mm256_loadu_ps(v));
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + 8)));
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + 16)));
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(v + 24)));
            __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
            amax = _mm_cvtss_f32(m4);
#else
            for (int i = 0; i < 32; i++) amax = fmaxf(amax, fabsf(v[i]));
#endif
            const float scale = amax / 127.0f, inverse = amax != 0 ? 127.0f / amax : 0.0f;
            int low_sum = 0, high_sum = 0;
#ifdef PAGODA_I8_AVX2
            const __m256 mul = _mm256_set1_ps(inverse);
            __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v), mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v + 8), mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v + 16), mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v + 24), mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            // Elements 0..<16 and 16..<32 summed side by side: the low half's sums in the low
            // 128-bit lane of `halves`, the high half's in its high lane.
            const __m256i low = _mm256_add_epi32(i0, i1), high = _mm256_add_epi32(i2, i3);
            __m256i halves = _mm256_add_epi32(_mm256_permute2x128_si256(low, high, 0x20), _mm256_permute2x128_si256(low, high, 0x31));
            halves = _mm256_add_epi32(halves, _mm256_shuffle_epi32(halves, 0x4E));
            halves = _mm256_add_epi32(halves, _mm256_shuffle_epi32(halves, 0xB1));
            low_sum = _mm256_cvtsi256_si32(halves);
            high_sum = _mm_cvtsi128_si32(_mm256_extracti128_si256(halves, 1));
            // Pack to bytes; the packs work within 128-bit lanes, so restore the order after.
            __m256i w01 = _mm256_packs_epi32(i0, i1), w23 = _mm256_packs_epi32(i2, i3);
            __m256i bytes = _mm256_packs_epi16(w01, w23);
            bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(q + 32 * b), bytes);
#else
            for (int i = 0; i < 32; i++) {
                const int value = (int)nearbyintf(v[i] * inverse);
                q[32 * b + i] = (int8_t)value;
                if (i < 16) low_sum += value; else high_sum += value;
            }
#endif
            const int sum = low_sum + high_sum;
            d[b] = scale;
            s[b] = scale * (float)sum;
            all_terms[b] = -128 * sum;
            low_terms[b] = -32 * low_sum;
            high_terms[b] = -32 * high_sum;
        }
    }
}

// MARK: packed weights

static inline int has_offset(int type) { return type == PAGODA_I8_Q4_1 || type == PAGODA_I8_Q5_1 || type == PAGODA_I8_Q4_K; }
/// Types whose packed quants are nibbles (Q5_0: plus a plane of fifth bits after them).
static inline int is_nibble_type(int type) {
    return type == PAGODA_I8_Q4_0 || type == PAGODA_I8_Q4_1 || type == PAGODA_I8_Q4_K || type == PAGODA_I8_Q5_0;
}
/// Whether the factors are float32, 8 scales then 8 offsets or second-half scales (the K-quants).
static inline int has_float_factors(int type) { return type == PAGODA_I8_Q4_K || type == PAGODA_I8_Q6_K; }
/// Signed 8-bit weights (Q8_0, and Q6_K's q - 32).
static inline int is_signed_byte_type(int type) { return type == PAGODA_I8_Q8_0 || type == PAGODA_I8_Q6_K; }

/// What a signed weight type's packed bytes add to its values (see PAGODA_I8_BIASED_SIGNED).
static inline int signed_bias(int type) {
#ifdef PAGODA_I8_BIASED_SIGNED
    return type == PAGODA_I8_Q8_0 ? 128 : type == PAGODA_I8_Q6_K ? 32 : 0;
#else
    (void)type;
    return 0;
#endif
}

/// Bytes of one chunk of a packed group block: 4 weights (bytes or nibble pairs) per row.
#define CHUNK_BYTES (4 * PAGODA_I8_GROUP)

/// Bytes of the factors before a packed group block's quants: a float16 or float32 per row, two
/// of them for the types with an offset or a second scale.
static inline size_t factor_bytes(int type) {
    return has_float_factors(type) ? 8 * PAGODA_I8_GROUP : has_offset(type) ? 4 * PAGODA_I8_GROUP : 2 * PAGODA_I8_GROUP;
}

/// Bytes before the quants in one stored (source) block.
static inline size_t stored_factor_bytes(int type) {
    switch (type) {
    case PAGODA_I8_Q4_0: case PAGODA_I8_Q8_0: return 2;
    case PAGODA_I8_Q4_1: return 4;
    case PAGODA_I8_Q5_0: return 6;  // d, qh
    case PAGODA_I8_Q5_1: return 8;
    default: return 8;  // the wide K-quants: two float32 factors
    }
}

size_t pagoda_i8_group_rows(void) { return PAGODA_I8_GROUP; }

size_t pagoda_i8_group_block_bytes(int type) {
    switch (type) {
    case PAGODA_I8_Q4_0: case PAGODA_I8_Q4_1: case PAGODA_I8_Q4_K: return factor_bytes(type) + 4 * CHUNK_BYTES;
    case PAGODA_I8_Q5_0: return factor_bytes(type) + 5 * CHUNK_BYTES;  // nibbles, then the fifth bits
    case PAGODA_I8_Q5_1: case PAGODA_I8_Q8_0: case PAGODA_I8_Q6_K: return factor_bytes(type) + 8 * CHUNK_BYTES;
    default: return 0;
    }
}

/// The 32 integer weights of a stored block in element order (Q5_1 unpacked to 0...31; Q4_0,
/// Q4_1 and Q8_0 are not unpacked here: their quant bytes are copied as stored).
static void q5_1_values(const uint8_t *block, uint8_t *q) {
    uint32_t qh;
    memcpy(&qh, block + 4, 4);
    for (int j = 0; j < 16; j++) {
        q[j] = (uint8_t)((block[8 + j] & 15) | (((qh >> j) & 1) << 4));
        q[j + 16] = (uint8_t)((block[8 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
    }
}

int pagoda_i8_pack_group(int type, const uint8_t *const rows[PAGODA_I8_GROUP], const size_t block_strides[PAGODA_I8_GROUP],
                         size_t valid_rows, size_t blocks, uint8_t *out) {
    const size_t block_bytes = pagoda_i8_group_block_bytes(type);
    if (block_bytes == 0 || valid_rows > PAGODA_I8_GROUP) return -1;
    memset(out, 0, block_bytes * blocks);
    const size_t scales = factor_bytes(type), stored = stored_factor_bytes(type);
    for (size_t b = 0; b < blocks; b++) {
        uint8_t *group = out + b * block_bytes;
        for (size_t r = 0; r < valid_rows; r++) {
            const uint8_t *block = rows[r] + b * block_strides[r];
            if (has_float_factors(type)) {
                memcpy(group + 4 * r, block, 4);            // scale (Q6_K: of elements 0..<16)
                memcpy(group + 4 * PAGODA_I8_GROUP + 4 * r, block + 4, 4);   // offset (Q6_K: scale of 16..<32)
            } else {
                memcpy(group + 2 * r, block, 2);                              // d
                if (has_offset(type)) memcpy(group + 2 * PAGODA_I8_GROUP + 2 * r, block + 2, 2);  // m
            }
            uint8_t *quants = group + scales;
            if (is_nibble_type(type)) {
                const uint8_t *qs = block + stored;
                for (int c = 0; c < 4; c++) memcpy(quants + CHUNK_BYTES * c + 4 * r, qs + 4 * c, 4);
                if (type == PAGODA_I8_Q5_0) {
                    uint32_t qh;
                    memcpy(&qh, block + 2, 4);
                    for (int c = 0; c < 4; c++) {
                        for (int i = 0; i < 4; i++) {
                            const uint32_t low = (qh >> (4 * c + i)) & 1, high = (qh >> (16 + 4 * c + i)) & 1;
                            quants[4 * CHUNK_BYTES + 4 * r + i] |= (uint8_t)(low << (2 * c) | high << (2 * c + 1));
                        }
                    }
                }
            } else {
                uint8_t q[32];
                if (type == PAGODA_I8_Q5_1) q5_1_values(block, q); else memcpy(q, block + stored, 32);
                for (int j = 0; j < 32; j++) q[j] = (uint8_t)(q[j] + signed_bias(type));  // wraps: int8 + bias
                for (int k = 0; k < 8; k++) memcpy(quants + CHUNK_BYTES * k + 4 * r, q + 4 * k, 4);
            }
        }
    }
    return 0;
}

/// Weight `j` (0...31) of lane `r` of a packed group block, as the integer of its stored block.
static inline int packed_weight(int type, const uint8_t *quants, size_t r, int j) {
    if (is_nibble_type(type)) {
        const int c = (j & 15) >> 2;
        const uint8_t byte = quants[CHUNK_BYTES * c + 4 * r + (j & 3)];
        const int nibble = j < 16 ? (byte & 15) : (byte >> 4);
        if (type != PAGODA_I8_Q5_0) return nibble;
        return nibble | ((quants[4 * CHUNK_BYTES + 4 * r + (j & 3)] >> (2 * c + (j >= 16))) & 1) << 4;
    }
    const uint8_t byte = quants[CHUNK_BYTES * (j >> 2) + 4 * r + (j & 3)];
    return is_signed_byte_type(type) ? (signed_bias(type) ? (int)byte - signed_bias(type) : (int)(int8_t)byte) : (int)byte;
}

/// Lane r's scale `d` of a packed group block (Q6_K: of elements 0..<16).
static inline float packed_scale(int type, const uint8_t *group, size_t r) {
    if (!has_float_factors(type)) return half_to_float(group + 2 * r);
    float f;
    memcpy(&f, group + 4 * r, 4);
    return f;
}

/// Lane r's offset `m` (Q4_1, Q5_1, Q4_K; 0 for the others), or Q6_K's scale of elements 16..<32.
static inline float packed_second_factor(int type, const uint8_t *group, size_t r) {
    if (has_float_factors(type)) {
        float f;
        memcpy(&f, group + 4 * PAGODA_I8_GROUP + 4 * r, 4);
        return f;
    }
    return has_offset(type) ? half_to_float(group + 2 * PAGODA_I8_GROUP + 2 * r) : 0;
}

void pagoda_i8_dequantize_row(int type, const uint8_t *packed, size_t blocks, size_t lane, float *out) {
    const size_t block_bytes = pagoda_i8_group_block_bytes(type), scales = factor_bytes(type);
    for (size_t b = 0; b < blocks; b++) {
        const uint8_t *group = packed + b * block_bytes;
        const float d = packed_scale(type, group, lane), second = packed_second_factor(type, group, lane);
        const int bias = type == PAGODA_I8_Q4_0 ? 8 : type == PAGODA_I8_Q5_0 ? 16 : 0;
        for (int j = 0; j < 32; j++) {
            // As ggml's dequantize_row_*: the product rounded, then the offset added.
            const float q = (float)(packed_weight(type, group + scales, lane, j) - bias);
            if (type == PAGODA_I8_Q6_K) {
                out[32 * b + j] = q * (j < 16 ? d : second);
            } else {
                const float value = q * d;
                out[32 * b + j] = has_offset(type) ? value + second : value;
            }
        }
    }
}

// MARK: products
//
// Every kernel below computes lane r (weight row r of the group) for token t as: per block b, the
// exact integer dot product i of the block's integer weights (Q4_0 unsigned, 0...15) with the
// token's int8 values; acc = fma(float(i), d_w * d_x, acc); then, for weight types with an
// offset per unit of activation (Q4_1, Q5_1, Q4_K: m; Q4_0: -8 d_w; Q5_0: -16 d_w),
// acc = fma(offset, s_x, acc).
// Q6_K, whose two 16-element halves have their own scales, takes two integer dot products per
// block: acc = fma(float(i_low), d_low * d_x, acc), then the same for the high half.
// The AVX2 code and the portable code follow that sequence for every token count, so a token's
// result does not depend on the batch it is computed in.

#ifdef PAGODA_I8_AVX2

#define ALWAYS_INLINE static inline __attribute__((always_inline))

// One packed group's lanes as vectors: 16 x 32-bit (zmm) where the group is 16 rows (AVX-512
// with VNNI), else 8 (ymm). `lanes_i` holds each lane's four weight or activation bytes or its
// int32 sum, `lanes_f` its float.
#if PAGODA_I8_GROUP == 16
typedef __m512i lanes_i;
typedef __m512 lanes_f;
#define li_load(p) _mm512_loadu_si512((const void *)(p))
#define li_set1_32 _mm512_set1_epi32
#define li_set1_8 _mm512_set1_epi8
#define li_zero _mm512_setzero_si512
#define li_and _mm512_and_si512
#define li_or _mm512_or_si512
#define li_srli16 _mm512_srli_epi16
#define li_slli16 _mm512_slli_epi16
#define li_add32 _mm512_add_epi32
#define lf_zero _mm512_setzero_ps
#define lf_load _mm512_loadu_ps
#define lf_halves(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p)))
#define lf_set1 _mm512_set1_ps
#define lf_mul _mm512_mul_ps
#define lf_fma _mm512_fmadd_ps
#define lf_from_int _mm512_cvtepi32_ps
#define lf_store _mm512_storeu_ps
#else
typedef __m256i lanes_i;
typedef __m256 lanes_f;
#define li_load(p) _mm256_loadu_si256((const __m256i *)(p))
#define li_set1_32 _mm256_set1_epi32
#define li_set1_8 _mm256_set1_epi8
#define li_zero _mm256_setzero_si256
#define li_and _mm256_and_si256
#define li_or _mm256_or_si256
#define li_srli16 _mm256_srli_epi16
#define li_slli16 _mm256_slli_epi16
#define li_add32 _mm256_add_epi32
#define lf_zero _mm256_setzero_ps
#define lf_load _mm256_loadu_ps
#define lf_halves(p) _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p)))
#define lf_set1 _mm256_set1_ps
#define lf_mul _mm256_mul_ps
#define lf_fma _mm256_fmadd_ps
#define lf_from_int _mm256_cvtepi32_ps
#define lf_store _mm256_storeu_ps
#endif

/// The broadcast 4 activation bytes at `p`.
ALWAYS_INLINE lanes_i x4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return li_set1_32(v);
}

/// One block's running products of unsigned weight bytes with signed activation bytes, per lane:
/// with VNNI (`vpdpbusd`) the int32 sums of each lane's four products; without it the int16 sums
/// of product pairs (`vpmaddubsw`), widened by `widen_products`. The sums never overflow int16
/// (pairs of nibble products, or of at most 2 x 127 x 127), so both give the same integers.
ALWAYS_INLINE lanes_i add_products(lanes_i acc, lanes_i w, lanes_i x) {
#if PAGODA_I8_GROUP == 16
    return _mm512_dpbusd_epi32(acc, w, x);
#elif defined(PAGODA_I8_VNNI)
    return pagoda_dpbusd(acc, w, x);
#else
    return _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, x));
#endif
}

/// `add_products`' sums as int32 lanes (each the sum of the lane's four byte products).
ALWAYS_INLINE lanes_i widen_products(lanes_i acc) {
#ifdef PAGODA_I8_VNNI
    return acc;
#else
    return _mm256_madd_epi16(acc, _mm256_set1_epi16(1));
#endif
}

/// s16[t] = add_products(s16[t], w, ...) with token t's activation bytes at `offset` in its row,
/// each lane's 4 bytes broadcast from there.
ALWAYS_INLINE void add_pair_sums(lanes_i *s16, size_t tokens, lanes_i w, const uint8_t *x, size_t x_stride, size_t offset) {
    for (size_t t = 0; t < tokens; t++) s16[t] = add_products(s16[t], w, x4(x + t * x_stride + offset));
}

/// Bit `bit` of every byte of a Q5_0 fifth-bit plane, moved to bit 4 (the value 16). 16-bit
/// shifts do it: for shifts of at most 4, bit 4 of each byte comes from within that byte.
ALWAYS_INLINE lanes_i fifth_bits(lanes_i fifth, int bit) {
    lanes_i moved;
    switch (bit) {
    case 0: moved = li_slli16(fifth, 4); break;
    case 1: moved = li_slli16(fifth, 3); break;
    case 2: moved = li_slli16(fifth, 2); break;
    case 3: moved = li_slli16(fifth, 1); break;
    case 4: moved = fifth; break;
    case 5: moved = li_srli16(fifth, 1); break;
    case 6: moved = li_srli16(fifth, 2); break;
    default: moved = li_srli16(fifth, 3); break;
    }
    return li_and(moved, li_set1_8(0x10));
}

ALWAYS_INLINE void gemm_tile(const int type, const size_t tokens, const uint8_t *packed, size_t blocks,
                             const uint8_t *x, size_t x_stride, float *out, size_t out_stride, size_t rows) {
    const size_t block_bytes = pagoda_i8_group_block_bytes(type), scales = factor_bytes(type);
    const float *dx[PAGODA_I8_TILE], *sx[PAGODA_I8_TILE];
    const int32_t *terms[PAGODA_I8_TILE];
    for (size_t t = 0; t < tokens; t++) {
        dx[t] = row_scales(x + t * x_stride, blocks);
        sx[t] = dx[t] + blocks;
        terms[t] = row_bias_terms(x + t * x_stride, blocks);
    }
    const lanes_i low = li_set1_8(0x0F);
    lanes_f acc[PAGODA_I8_TILE];
    for (size_t t = 0; t < tokens; t++) acc[t] = lf_zero();
    for (size_t b = 0; b < blocks; b++) {
        const uint8_t *group = packed + b * block_bytes, *quants = group + scales;
        // The groups follow each other in memory: fetch the stream PAGODA_PREFETCH_BYTES ahead.
        for (size_t line = 0; line < block_bytes; line += 64) __builtin_prefetch(group + PAGODA_PREFETCH_BYTES + line, 0, 3);
        const lanes_f dw = has_float_factors(type) ? lf_load((const float *)group) : lf_halves(group);
        lanes_i sums[PAGODA_I8_TILE], high_sums[PAGODA_I8_TILE];
        if (is_nibble_type(type) || type == PAGODA_I8_Q5_1) {
            // Unsigned values. Nibbles give pair sums of at most 2 * 15 * 127, so all eight of a
            // block fit in int16; 5-bit values (Q5_0, Q5_1) at most 2 * 31 * 127, so each half
            // of the block is widened to int32 on its own.
            const int halves = type == PAGODA_I8_Q5_0 || type == PAGODA_I8_Q5_1 ? 2 : 1;
            const lanes_i fifth = type == PAGODA_I8_Q5_0 ? li_load(quants + 4 * CHUNK_BYTES) : li_zero();
            for (size_t t = 0; t < tokens; t++) sums[t] = li_zero();
            for (int half = 0; half < halves; half++) {
                lanes_i s16[PAGODA_I8_TILE];
                for (size_t t = 0; t < tokens; t++) s16[t] = li_zero();
                if (type == PAGODA_I8_Q5_1) {
                    for (int k = 4 * half; k < 4 * half + 4; k++)
                        add_pair_sums(s16, tokens, li_load(quants + CHUNK_BYTES * k), x, x_stride, 32 * b + 4 * k);
                } else {
                    for (int c = 4 / halves * half; c < 4 / halves * (half + 1); c++) {
                        const lanes_i raw = li_load(quants + CHUNK_BYTES * c);
                        lanes_i lo = li_and(raw, low), hi = li_and(li_srli16(raw, 4), low);
                        if (type == PAGODA_I8_Q5_0) {
                            lo = li_or(lo, fifth_bits(fifth, 2 * c));
                            hi = li_or(hi, fifth_bits(fifth, 2 * c + 1));
                        }
                        add_pair_sums(s16, tokens, lo, x, x_stride, 32 * b + 4 * c);
                        add_pair_sums(s16, tokens, hi, x, x_stride, 32 * b + 16 + 4 * c);
                    }
                }
                for (size_t t = 0; t < tokens; t++) sums[t] = li_add32(sums[t], widen_products(s16[t]));
            }
        } else if (is_signed_byte_type(type)) {
            // Q6_K: chunks 0..3 (elements 0..<16) into `sums`, 4..7 into `high_sums`.
#ifdef PAGODA_I8_BIASED_SIGNED
            // Biased bytes (w + bias): the sums start from the token's -bias * sum(x) terms.
            for (size_t t = 0; t < tokens; t++) {
                if (type == PAGODA_I8_Q6_K) {
                    sums[t] = li_set1_32(terms[t][blocks + b]);
                    high_sums[t] = li_set1_32(terms[t][2 * blocks + b]);
                } else {
                    sums[t] = li_set1_32(terms[t][b]);
                }
            }
            for (int k = 0; k < 8; k++) {
                const lanes_i w = li_load(quants + CHUNK_BYTES * k);
                if (type == PAGODA_I8_Q6_K && k >= 4) add_pair_sums(high_sums, tokens, w, x, x_stride, 32 * b + 4 * k);
                else add_pair_sums(sums, tokens, w, x, x_stride, 32 * b + 4 * k);
            }
#else
            for (size_t t = 0; t < tokens; t++) sums[t] = high_sums[t] = li_zero();
            for (int k = 0; k < 8; k++) {
                const __m256i w = li_load(quants + CHUNK_BYTES * k), aw = _mm256_sign_epi8(w, w);
                for (size_t t = 0; t < tokens; t++) {
                    // |w| (unsigned) times x with w's signs: the same products as w times x.
                    // (Without VNNI, so `vpmaddubsw` pair sums, widened per chunk.)
                    const __m256i signed_x = _mm256_sign_epi8(x4(x + t * x_stride + 32 * b + 4 * k), w);
                    const __m256i pairs = widen_products(add_products(_mm256_setzero_si256(), aw, signed_x));
                    if (type == PAGODA_I8_Q6_K && k >= 4) high_sums[t] = _mm256_add_epi32(high_sums[t], pairs);
                    else sums[t] = _mm256_add_epi32(sums[t], pairs);
                }
            }
#endif
        }
        // The offsets, or Q6_K's second-half scales.
        lanes_f second = lf_zero();
        if (type == PAGODA_I8_Q4_0) second = lf_mul(dw, lf_set1(-8));
        if (type == PAGODA_I8_Q5_0) second = lf_mul(dw, lf_set1(-16));
        if (has_float_factors(type)) second = lf_load((const float *)(group + 4 * PAGODA_I8_GROUP));
        else if (has_offset(type)) second = lf_halves(group + 2 * PAGODA_I8_GROUP);
        for (size_t t = 0; t < tokens; t++) {
            const lanes_f x_scale = lf_set1(dx[t][b]);
            acc[t] = lf_fma(lf_from_int(sums[t]), lf_mul(dw, x_scale), acc[t]);
            if (type == PAGODA_I8_Q6_K) acc[t] = lf_fma(lf_from_int(high_sums[t]), lf_mul(second, x_scale), acc[t]);
            else if (type != PAGODA_I8_Q8_0) acc[t] = lf_fma(second, lf_set1(sx[t][b]), acc[t]);
        }
    }
    for (size_t t = 0; t < tokens; t++) {
        if (rows == PAGODA_I8_GROUP) {
            lf_store(out + t * out_stride, acc[t]);
        } else {
            float lanes[PAGODA_I8_GROUP];
            lf_store(lanes, acc[t]);
            memcpy(out + t * out_stride, lanes, rows * sizeof(float));
        }
    }
}

ALWAYS_INLINE int gemm_type(int type, const size_t tokens, const uint8_t *packed, size_t blocks,
                            const uint8_t *x, size_t x_stride, float *out, size_t out_stride, size_t rows) {
    switch (type) {
    case PAGODA_I8_Q4_0: gemm_tile(PAGODA_I8_Q4_0, tokens, packed, blocks, x, x_stride, out, out_stride, rows); return 0;
    case PAGODA_I8_Q4_1: gemm_tile(PAGODA_I8_Q4_1, tokens, packed, blocks, x, x_stride, out, out_stride, rows); return 0;
    case PAGODA_I8_Q5_0: gemm_tile(PAGODA_I8_Q5_0, tokens, packed, blocks, x, x_stride, out, out_stride, rows); return 0;
    case PAGODA_I8_Q5_1: gemm_tile(PAGODA_I8_Q5_1, tokens, packed, blocks, x, x_stride, out, out_stride, rows); return 0;
    case PAGODA_I8_Q8_0: gemm_tile(PAGODA_I8_Q8_0, tokens, packed, blocks, x, x_stride, out, out_stride, rows); return 0;
    case PAGODA_I8_Q4_K: gemm_tile(PAGODA_I8_Q4_K, tokens, packed, blocks, x, x_stride, out, out_stride, rows); return 0;
    case PAGODA_I8_Q6_K: gemm_tile(PAGODA_I8_Q6_K, tokens, packed, blocks, x, x_stride, out, out_stride, rows); return 0;
    default: return -1;
    }
}

int pagoda_i8_gemm(int type, const uint8_t *packed, size_t blocks, const uint8_t *x, size_t x_stride, size_t tokens,
                   float *out, size_t out_stride, size_t rows) {
    if (rows > PAGODA_I8_GROUP) return -1;
    switch (tokens) {
    case 1: return gemm_type(type, 1, packed, blocks, x, x_stride, out, out_stride, rows);
    case 2: return gemm_type(type, 2, packed, blocks, x, x_stride, out, out_stride, rows);
    case 3: return gemm_type(type, 3, packed, blocks, x, x_stride, out, out_stride, rows);
    case 4: return gemm_type(type, 4, packed, blocks, x, x_stride, out, out_stride, rows);
    default: return -1;
    }
}

#else

int pagoda_i8_gemm(int type, const uint8_t *packed, size_t blocks, const uint8_t *x, size_t x_stride, size_t tokens,
                   float *out, size_t out_stride, size_t rows) {
    const size_t block_bytes = pagoda_i8_group_block_bytes(type), scales = factor_bytes(type);
    if (block_bytes == 0 || tokens > PAGODA_I8_TILE || rows > PAGODA_I8_GROUP) return -1;
    for (size_t r = 0; r < rows; r++) {
        for (size_t t = 0; t < tokens; t++) {
            const uint8_t *row = x + t * x_stride;
            const int8_t *xq = (const int8_t *)row;
            const float *dx = row_scales(row, blocks), *sx = dx + blocks;
            float acc = 0;
            for (size_t b = 0; b < blocks; b++) {
                const uint8_t *group = packed + b * block_bytes;
                const float dw = packed_scale(type, group, r), second = packed_second_factor(type, group, r);
                int sum = 0, high = 0;
                for (int j = 0; j < 32; j++) {
                    const int product = packed_weight(type, group + scales, r, j) * (int)xq[32 * b + j];
                    if (type == PAGODA_I8_Q6_K && j >= 16) high += product; else sum += product;
                }
                acc = fmaf((float)sum, dw * dx[b], acc);
                if (type == PAGODA_I8_Q6_K) acc = fmaf((float)high, second * dx[b], acc);
                if (type == PAGODA_I8_Q4_0) acc = fmaf(dw * -8.0f, sx[b], acc);
                if (type == PAGODA_I8_Q5_0) acc = fmaf(dw * -16.0f, sx[b], acc);
                if (has_offset(type)) acc = fmaf(second, sx[b], acc);
            }
            out[t * out_stride + r] = acc;
        }
    }
    return 0;
}

#endif
