// What bounds the exact (float32-activation) Q4_1 decode product on an AVX2 CPU: a C model of
// Pagoda's 4-row decode kernel (`Product.rows4` over `Q4_1PlanesChunks`) next to three other ways
// to compute the same products, and the throughput of the instructions they are made of.
//
//   gcc -O3 -march=native Benchmarks/avx2-decode-formulations.c -o /tmp/formulations && /tmp/formulations
//
// One thread, a 768 x 576 Q4_1 matrix in the nibble-plane layout (276 KB: stays in L2), one token,
// best of 300 products per formulation, three rounds. Per eight weights of a row:
//   fused    (Pagoda's): shift, mask, int-to-float, w = q*d + m (FMA), acc += w*x (FMA)
//   magic:   shift, mask, OR 2^23, subtract 2^23 (instead of the conversion), then as fused
//   lookup:  shift and shift (index, bit-3 select), two `vpermps` into the 16-weight table, blend,
//            acc += w*x; the table is two FMAs per block (AVX-512's `pagoda_lookup16`, in AVX2)
//   factored: shift, mask, int-to-float, p += q*x (FMA); per block acc += d*p and acc += m*sum(x)
//            (other roundings: a token's result would differ between this kernel and the prefill
//            tiles, which keep the fused weights, so it cannot replace one of them alone)
// The probes time blocks of independent instructions (4 or 8 per iteration, 10^8 iterations):
// which of them share execution ports shows in the time of a mixed block against its parts.
// Results: BENCHMARKS.md, 2026-12-04.
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define COLS 576
#define ROWS 768
#define BLOCK_BYTES 40  // two Q4_1 blocks: 8 words of nibble planes, then d0, m0, d1, m1 (float16)
#define ALWAYS static inline __attribute__((always_inline))

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/// Plane v of the block's words: the values of 8 weights as floats.
ALWAYS __m256 plane(__m256i words, int v) {
    return _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(words, 4 * v), _mm256_set1_epi32(15)));
}

ALWAYS void factors(const unsigned char *block, int chunk, __m256 *d, __m256 *m) {
    int bits;
    memcpy(&bits, block + 32 + 4 * chunk, 4);
    const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
    *d = _mm256_broadcastss_ps(dm);
    *m = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
}

ALWAYS void fused(const unsigned char *block, int chunk, const float *x, const float *xsum, __m256 *acc) {
    (void)xsum;
    const __m256i words = _mm256_loadu_si256((const __m256i *)block);
    __m256 d, m;
    factors(block, chunk, &d, &m);
    for (int v = 0; v < 4; v++)
        *acc = _mm256_fmadd_ps(_mm256_fmadd_ps(plane(words, 4 * chunk + v), d, m), _mm256_loadu_ps(x + 8 * v), *acc);
}

ALWAYS void magic(const unsigned char *block, int chunk, const float *x, const float *xsum, __m256 *acc) {
    (void)xsum;
    const __m256i words = _mm256_loadu_si256((const __m256i *)block);
    __m256 d, m;
    factors(block, chunk, &d, &m);
    for (int v = 0; v < 4; v++) {
        const __m256i bits = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi32(words, 4 * (4 * chunk + v)), _mm256_set1_epi32(15)),
                                             _mm256_set1_epi32(0x4B000000));
        const __m256 q = _mm256_sub_ps(_mm256_castsi256_ps(bits), _mm256_set1_ps(8388608.0f));
        *acc = _mm256_fmadd_ps(_mm256_fmadd_ps(q, d, m), _mm256_loadu_ps(x + 8 * v), *acc);
    }
}

ALWAYS void lookup(const unsigned char *block, int chunk, const float *x, const float *xsum, __m256 *acc) {
    (void)xsum;
    const __m256i words = _mm256_loadu_si256((const __m256i *)block);
    __m256 d, m;
    factors(block, chunk, &d, &m);
    const __m256 low = _mm256_fmadd_ps(_mm256_setr_ps(0, 1, 2, 3, 4, 5, 6, 7), d, m);
    const __m256 high = _mm256_fmadd_ps(_mm256_setr_ps(8, 9, 10, 11, 12, 13, 14, 15), d, m);
    for (int v = 0; v < 4; v++) {
        const int p = 4 * chunk + v;
        const __m256i index = _mm256_srli_epi32(words, 4 * p), select = _mm256_slli_epi32(words, 28 - 4 * p);
        const __m256 w = _mm256_blendv_ps(_mm256_permutevar8x32_ps(low, index), _mm256_permutevar8x32_ps(high, index),
                                          _mm256_castsi256_ps(select));
        *acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + 8 * v), *acc);
    }
}

ALWAYS void factored(const unsigned char *block, int chunk, const float *x, const float *xsum, __m256 *acc) {
    const __m256i words = _mm256_loadu_si256((const __m256i *)block);
    __m256 d, m;
    factors(block, chunk, &d, &m);
    __m256 p = _mm256_mul_ps(plane(words, 4 * chunk), _mm256_loadu_ps(x));
    for (int v = 1; v < 4; v++) p = _mm256_fmadd_ps(plane(words, 4 * chunk + v), _mm256_loadu_ps(x + 8 * v), p);
    *acc = _mm256_fmadd_ps(p, d, *acc);
    *acc = _mm256_fmadd_ps(_mm256_loadu_ps(xsum), m, *acc);
}

/// Rows four at a time (their blocks side by side, as Pagoda's 4-row tiles keep them), one token.
#define KERNEL(name, chunkFunction)                                                                      \
    static void name(const unsigned char *weights, const float *x, const float *xsums, float *out) {   \
        for (int r = 0; r < ROWS; r += 4) {                                                              \
            const unsigned char *tile = weights + (size_t)r * (COLS / 64) * BLOCK_BYTES;                 \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                                  \
            for (int b = 0; b < COLS / 64; b++) {                                                        \
                const unsigned char *block = tile + b * 4 * BLOCK_BYTES;                                 \
                for (int c = 0; c < 2; c++) {                                                            \
                    const float *xc = x + 64 * b + 32 * c, *sc = xsums + 8 * (2 * b + c);                \
                    chunkFunction(block, c, xc, sc, &a0);                                                \
                    chunkFunction(block + BLOCK_BYTES, c, xc, sc, &a1);                                  \
                    chunkFunction(block + 2 * BLOCK_BYTES, c, xc, sc, &a2);                              \
                    chunkFunction(block + 3 * BLOCK_BYTES, c, xc, sc, &a3);                              \
                }                                                                                        \
            }                                                                                            \
            __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));                   \
            __m128 t = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));               \
            _mm_storeu_ps(out + r, t);                                                                   \
        }                                                                                                \
    }
KERNEL(fusedKernel, fused)
KERNEL(magicKernel, magic)
KERNEL(lookupKernel, lookup)
KERNEL(factoredKernel, factored)

#define PROBE(name, body)                                                                                \
    {                                                                                                    \
        const long n = 100000000L;                                                                       \
        const double start = now();                                                                      \
        for (long i = 0; i < n; i++)                                                                     \
            __asm__ volatile(body ::: "ymm0", "ymm1", "ymm2", "ymm3", "ymm4", "ymm5", "ymm6", "ymm7");   \
        printf("  %-34s %.3f ns per iteration\n", name, (now() - start) / n * 1e9);                      \
    }
#define FMA(r) "vfmadd231ps %%ymm13, %%ymm12, %%ymm" #r "\n"
#define CVT(r) "vcvtdq2ps %%ymm12, %%ymm" #r "\n"
#define SRL(r) "vpsrld $4, %%ymm12, %%ymm" #r "\n"
#define AND(r) "vpand %%ymm13, %%ymm12, %%ymm" #r "\n"
#define ADD(r) "vaddps %%ymm13, %%ymm12, %%ymm" #r "\n"
#define MADDUBS(r) "vpmaddubsw %%ymm13, %%ymm12, %%ymm" #r "\n"
#define MADDWD(r) "vpmaddwd %%ymm13, %%ymm12, %%ymm" #r "\n"
#define SIGN(r) "vpsignb %%ymm13, %%ymm12, %%ymm" #r "\n"

int main(void) {
    const size_t bytes = (size_t)ROWS * (COLS / 64) * BLOCK_BYTES;
    unsigned char *weights = aligned_alloc(64, bytes);
    srand(1);
    for (size_t i = 0; i < bytes; i++) weights[i] = (unsigned char)rand();
    for (size_t i = 32; i < bytes; i += BLOCK_BYTES) {
        const unsigned short halves[4] = {0x2c00, 0xa400, 0x2c00, 0xa000};  // d = 1/16, m = -1/64 ...
        memcpy(weights + i, halves, 8);
    }
    float *x = aligned_alloc(64, COLS * sizeof(float)), *xsums = aligned_alloc(64, COLS / 4 * sizeof(float)), out[ROWS];
    for (int i = 0; i < COLS; i++) x[i] = (float)(rand() % 2001 - 1000) / 1000.0f;
    for (int c = 0; c < COLS / 32; c++)  // lane l: the chunk's x[l] + x[8 + l] + x[16 + l] + x[24 + l]
        for (int l = 0; l < 8; l++) xsums[8 * c + l] = x[32 * c + l] + x[32 * c + 8 + l] + x[32 * c + 16 + l] + x[32 * c + 24 + l];

    void (*kernels[])(const unsigned char *, const float *, const float *, float *) = {fusedKernel, magicKernel, lookupKernel, factoredKernel};
    const char *names[] = {"fused (Pagoda's)", "magic-number conversion", "vpermps table lookup", "factored"};
    for (int round = 0; round < 3; round++) {
        printf("round %d\n", round + 1);
        for (int k = 0; k < 4; k++) {
            double best = 1e9;
            for (int i = 0; i < 300; i++) {
                const double start = now();
                kernels[k](weights, x, xsums, out);
                const double t = now() - start;
                if (t < best) best = t;
            }
            printf("  %-24s %7.1f us  %5.2f GMAC/s  (row 5: %.5f)\n", names[k], best * 1e6, (double)ROWS * COLS / best * 1e-9, out[5]);
        }
    }
    __asm__ volatile("vpxor %%ymm12, %%ymm12, %%ymm12\n vpxor %%ymm13, %%ymm13, %%ymm13" ::: "ymm12", "ymm13");
    printf("instruction probes (ymm)\n");
    PROBE("8 FMA", FMA(0) FMA(1) FMA(2) FMA(3) FMA(4) FMA(5) FMA(6) FMA(7))
    PROBE("4 int-to-float", CVT(0) CVT(1) CVT(2) CVT(3))
    PROBE("4 shift", SRL(0) SRL(1) SRL(2) SRL(3))
    PROBE("4 and", AND(0) AND(1) AND(2) AND(3))
    PROBE("4 add", ADD(0) ADD(1) ADD(2) ADD(3))
    PROBE("4 int-to-float + 4 FMA", CVT(0) CVT(1) CVT(2) CVT(3) FMA(4) FMA(5) FMA(6) FMA(7))
    PROBE("4 shift + 4 FMA", SRL(0) SRL(1) SRL(2) SRL(3) FMA(4) FMA(5) FMA(6) FMA(7))
    PROBE("4 int-to-float + 4 shift", CVT(0) CVT(1) CVT(2) CVT(3) SRL(4) SRL(5) SRL(6) SRL(7))
    PROBE("4 add + 4 shift", ADD(0) ADD(1) ADD(2) ADD(3) SRL(4) SRL(5) SRL(6) SRL(7))
    PROBE("4 x (shift, and, cvt, FMA, FMA)",
          SRL(0) AND(1) CVT(2) FMA(3) FMA(4) SRL(5) AND(6) CVT(7) FMA(0) FMA(1) SRL(2) AND(3) CVT(4) FMA(5) FMA(6)
          SRL(7) AND(0) CVT(1) FMA(2) FMA(3))
    PROBE("4 maddubs", MADDUBS(0) MADDUBS(1) MADDUBS(2) MADDUBS(3))
    PROBE("4 maddubs + 4 maddwd", MADDUBS(0) MADDUBS(1) MADDUBS(2) MADDUBS(3) MADDWD(4) MADDWD(5) MADDWD(6) MADDWD(7))
    PROBE("4 maddubs + 4 sign", MADDUBS(0) MADDUBS(1) MADDUBS(2) MADDUBS(3) SIGN(4) SIGN(5) SIGN(6) SIGN(7))
    PROBE("4 maddubs + 4 FMA", MADDUBS(0) MADDUBS(1) MADDUBS(2) MADDUBS(3) FMA(4) FMA(5) FMA(6) FMA(7))
    return 0;
}
