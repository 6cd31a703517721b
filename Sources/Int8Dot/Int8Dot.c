// See Int8Dot.h. Two implementations of the same arithmetic: AVX2 (when the build targets a CPU
// that has it) and portable C. Either way a (row, token) result depends only on that row and
// that token, never on how many tokens share the call.
#include "Int8Dot.h"

#include <math.h>
#include <string.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define PAGODA_I8_AVX2 1
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

// MARK: quantization

void pagoda_i8_quantize(const float *x, size_t x_stride, size_t tokens, size_t cols, uint8_t *out) {
    const size_t blocks = cols / 32, row_bytes = pagoda_i8_row_bytes(cols);
    for (size_t t = 0; t < tokens; t++) {
        const float *in = x + t * x_stride;
        int8_t *q = (int8_t *)(out + t * row_bytes);
        float *d = (float *)(out + t * row_bytes + cols), *s = d + blocks;
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
            int sum = 0;
#ifdef PAGODA_I8_AVX2
            const __m256 mul = _mm256_set1_ps(inverse);
            __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v), mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v + 8), mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v + 16), mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v + 24), mul), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            __m256i total = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
            __m128i t4 = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
            t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0x4E));
            t4 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0xB1));
            sum = _mm_cvtsi128_si32(t4);
            // Pack to bytes; the packs work within 128-bit lanes, so restore the order after.
            __m256i w01 = _mm256_packs_epi32(i0, i1), w23 = _mm256_packs_epi32(i2, i3);
            __m256i bytes = _mm256_packs_epi16(w01, w23);
            bytes = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256((__m256i *)(q + 32 * b), bytes);
#else
            for (int i = 0; i < 32; i++) {
                const int value = (int)nearbyintf(v[i] * inverse);
                q[32 * b + i] = (int8_t)value;
                sum += value;
            }
#endif
            d[b] = scale;
            s[b] = scale * (float)sum;
        }
    }
}

// MARK: dot products

#ifdef PAGODA_I8_AVX2

#define ALWAYS_INLINE static inline __attribute__((always_inline))

/// Elements 0..15 from the low nibbles of `qs[0..16]`, 16..31 from the high nibbles.
static inline __m256i nibbles(const uint8_t *qs) {
    const __m128i q = _mm_loadu_si128((const __m128i *)qs), low = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), low), _mm_and_si128(q, low));
}

/// Byte i is 0xFF where bit i of the little-endian 32-bit `qh` is set, else 0.
static inline __m256i bits_to_bytes(const uint8_t *qh) {
    uint32_t bits;
    memcpy(&bits, qh, 4);
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits),
        _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
    return _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe)), _mm256_set1_epi64x(-1));
}

static inline float horizontal_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define PAGODA_I8_TILE 4

/// Eight float16 fields, `stride` bytes apart from `p`, as floats.
ALWAYS_INLINE __m256 halves8(const uint8_t *p, size_t stride) {
    uint16_t h[8];
    for (int j = 0; j < 8; j++) memcpy(&h[j], p + j * stride, 2);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
}

/// Lane j = the sum of the eight int32 lanes of `v[j]`, for eight vectors.
ALWAYS_INLINE __m256i sum_lanes8(const __m256i *v) {
    const __m256i a = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i b = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20), _mm256_permute2x128_si256(a, b, 0x31));
}

/// The 32 integer weights of a block as bytes, its scale `d` and its offset per unit of activation
/// sum (`m`, or `-8d` / `-16d` for Q4_0 / Q5_0, whose weights are kept unsigned here so that the
/// dot product needs no sign fix-up). Q8_0 stays signed.
ALWAYS_INLINE __m256i unpack(const int type, const uint8_t *block) {
    switch (type) {
    case PAGODA_I8_Q4_0: return nibbles(block + 2);
    case PAGODA_I8_Q4_1: return nibbles(block + 4);
    case PAGODA_I8_Q5_0: return _mm256_or_si256(nibbles(block + 6), _mm256_and_si256(bits_to_bytes(block + 2), _mm256_set1_epi8(0x10)));
    case PAGODA_I8_Q5_1: return _mm256_or_si256(nibbles(block + 8), _mm256_and_si256(bits_to_bytes(block + 4), _mm256_set1_epi8(0x10)));
    default: return _mm256_loadu_si256((const __m256i *)(block + 2));  // Q8_0
    }
}

/// Integer products of one block with one activation block, in eight int32 lanes.
ALWAYS_INLINE __m256i block_products(const int type, __m256i q, __m256i x) {
    const __m256i pairs = type == PAGODA_I8_Q8_0
        ? _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q))
        : _mm256_maddubs_epi16(q, x);
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

ALWAYS_INLINE float block_offset(const int type, const uint8_t *block, float d) {
    switch (type) {
    case PAGODA_I8_Q4_0: return -8 * d;
    case PAGODA_I8_Q5_0: return -16 * d;
    case PAGODA_I8_Q4_1: case PAGODA_I8_Q5_1: return half_to_float(block + 2);
    default: return 0;
    }
}

/// One weight row against `tokens` activation rows. Inlined with constant `type` and `tokens`
/// (see `pagoda_i8_dot`), so the per-token accumulators live in registers and the type's unpacking
/// is chosen once. Blocks go in groups of eight: each token's eight integer block sums are
/// reduced into one vector (lane j = block j), converted and scaled by eight weight scales times
/// eight activation scales at once; the blocks after the last full group are summed one by one.
ALWAYS_INLINE void dot_tile(const int type, const size_t tokens, const uint8_t *w, size_t block_stride, size_t blocks,
                            const uint8_t *x, size_t x_stride, float *out, size_t out_stride) {
    const int hasOffset = type != PAGODA_I8_Q8_0;
    __m256 acc[PAGODA_I8_TILE];
    for (size_t t = 0; t < tokens; t++) acc[t] = _mm256_setzero_ps();
    size_t b = 0;
    for (; b + 8 <= blocks; b += 8) {
        const uint8_t *group = w + b * block_stride;
        __m256i q[8];
        for (int j = 0; j < 8; j++) q[j] = unpack(type, group + j * block_stride);
        const __m256 dw = halves8(group, block_stride);
        __m256 mw = _mm256_setzero_ps();
        if (type == PAGODA_I8_Q4_0) mw = _mm256_mul_ps(dw, _mm256_set1_ps(-8));
        if (type == PAGODA_I8_Q5_0) mw = _mm256_mul_ps(dw, _mm256_set1_ps(-16));
        if (type == PAGODA_I8_Q4_1 || type == PAGODA_I8_Q5_1) mw = halves8(group + 2, block_stride);
        for (size_t t = 0; t < tokens; t++) {
            const uint8_t *row = x + t * x_stride;
            const float *scales = row_scales(row, blocks);
            __m256i sums[8];
            for (int j = 0; j < 8; j++) sums[j] = block_products(type, q[j], _mm256_loadu_si256((const __m256i *)(row + 32 * (b + j))));
            const __m256 scale = _mm256_mul_ps(dw, _mm256_loadu_ps(scales + b));
            acc[t] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(sum_lanes8(sums)), acc[t]);
            if (hasOffset) acc[t] = _mm256_fmadd_ps(mw, _mm256_loadu_ps(scales + blocks + b), acc[t]);
        }
    }
    float tail[PAGODA_I8_TILE] = {0};
    for (; b < blocks; b++) {
        const uint8_t *block = w + b * block_stride;
        const __m256i q = unpack(type, block);
        const float dw = half_to_float(block), mw = block_offset(type, block, dw);
        for (size_t t = 0; t < tokens; t++) {
            const uint8_t *row = x + t * x_stride;
            const float *scales = row_scales(row, blocks);
            const __m256i v = block_products(type, q, _mm256_loadu_si256((const __m256i *)(row + 32 * b)));
            __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
            s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
            tail[t] += dw * scales[b] * (float)_mm_cvtsi128_si32(s4);
            if (hasOffset) tail[t] += mw * scales[blocks + b];
        }
    }
    for (size_t t = 0; t < tokens; t++) out[t * out_stride] = horizontal_sum(acc[t]) + tail[t];
}

ALWAYS_INLINE int dot_type(int type, const size_t tokens, const uint8_t *w, size_t block_stride, size_t blocks,
                           const uint8_t *x, size_t x_stride, float *out, size_t out_stride) {
    switch (type) {
    case PAGODA_I8_Q4_0: dot_tile(PAGODA_I8_Q4_0, tokens, w, block_stride, blocks, x, x_stride, out, out_stride); return 0;
    case PAGODA_I8_Q4_1: dot_tile(PAGODA_I8_Q4_1, tokens, w, block_stride, blocks, x, x_stride, out, out_stride); return 0;
    case PAGODA_I8_Q5_0: dot_tile(PAGODA_I8_Q5_0, tokens, w, block_stride, blocks, x, x_stride, out, out_stride); return 0;
    case PAGODA_I8_Q5_1: dot_tile(PAGODA_I8_Q5_1, tokens, w, block_stride, blocks, x, x_stride, out, out_stride); return 0;
    case PAGODA_I8_Q8_0: dot_tile(PAGODA_I8_Q8_0, tokens, w, block_stride, blocks, x, x_stride, out, out_stride); return 0;
    default: return -1;
    }
}

int pagoda_i8_dot(int type, const uint8_t *w, size_t block_stride, size_t blocks,
                  const uint8_t *x, size_t x_stride, size_t tokens, float *out, size_t out_stride) {
    switch (tokens) {
    case 1: return dot_type(type, 1, w, block_stride, blocks, x, x_stride, out, out_stride);
    case 2: return dot_type(type, 2, w, block_stride, blocks, x, x_stride, out, out_stride);
    case 3: return dot_type(type, 3, w, block_stride, blocks, x, x_stride, out, out_stride);
    case 4: return dot_type(type, 4, w, block_stride, blocks, x, x_stride, out, out_stride);
    default: return -1;
    }
}

#else

#define PAGODA_I8_TILE 4

/// The 32 integer weights of a block, and its scale and offset.
static int unpack(int type, const uint8_t *block, int8_t *q, float *dw, float *mw) {
    *dw = half_to_float(block);
    *mw = 0;
    uint32_t qh = 0;
    switch (type) {
    case PAGODA_I8_Q4_0:
        for (int j = 0; j < 16; j++) { q[j] = (int8_t)((block[2 + j] & 15) - 8); q[j + 16] = (int8_t)((block[2 + j] >> 4) - 8); }
        return 0;
    case PAGODA_I8_Q4_1:
        *mw = half_to_float(block + 2);
        for (int j = 0; j < 16; j++) { q[j] = (int8_t)(block[4 + j] & 15); q[j + 16] = (int8_t)(block[4 + j] >> 4); }
        return 0;
    case PAGODA_I8_Q5_0:
        memcpy(&qh, block + 2, 4);
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)(((block[6 + j] & 15) | (((qh >> j) & 1) << 4)) - 16);
            q[j + 16] = (int8_t)(((block[6 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - 16);
        }
        return 0;
    case PAGODA_I8_Q5_1:
        *mw = half_to_float(block + 2);
        memcpy(&qh, block + 4, 4);
        for (int j = 0; j < 16; j++) {
            q[j] = (int8_t)((block[8 + j] & 15) | (((qh >> j) & 1) << 4));
            q[j + 16] = (int8_t)((block[8 + j] >> 4) | (((qh >> (j + 16)) & 1) << 4));
        }
        return 0;
    case PAGODA_I8_Q8_0:
        memcpy(q, block + 2, 32);
        return 0;
    default:
        return -1;
    }
}

int pagoda_i8_dot(int type, const uint8_t *w, size_t block_stride, size_t blocks,
                  const uint8_t *x, size_t x_stride, size_t tokens, float *out, size_t out_stride) {
    if (tokens > PAGODA_I8_TILE) return -1;
    float acc[PAGODA_I8_TILE] = {0}, offsets[PAGODA_I8_TILE] = {0};
    int8_t q[32];
    for (size_t b = 0; b < blocks; b++) {
        float dw, mw;
        if (unpack(type, w + b * block_stride, q, &dw, &mw) != 0) return -1;
        for (size_t t = 0; t < tokens; t++) {
            const uint8_t *row = x + t * x_stride;
            const int8_t *xq = (const int8_t *)row + 32 * b;
            const float *scales = row_scales(row, blocks);
            int sum = 0;
            for (int i = 0; i < 32; i++) sum += (int)q[i] * (int)xq[i];
            acc[t] += dw * scales[b] * (float)sum;
            offsets[t] += mw * scales[blocks + b];
        }
    }
    for (size_t t = 0; t < tokens; t++) out[t * out_stride] = acc[t] + offsets[t];
    return 0;
}

#endif
