/* Biased window attention on the CPU, forward and backward, for model/cpu_attention.py.
 *
 *   out = softmax(scale * q k^T + bias[h] + mask[w]) v      per (window b, head h); w = b % G
 *
 * All tensors float32, C-contiguous. q, k, v, out, dq, dk, dv: [B*H, n, d]; bias: [H, n, n];
 * mask: [G, n, n] or NULL; stats: [B*H, n, 2], each query row's score maximum and 1 / sum of exps,
 * written by the forward and read by the backward, which recomputes the probabilities from them
 * (as flash attention does) instead of keeping a [B*H, n, n] matrix.
 *
 * Threads: the B*H (window, head) pairs run on `threads` OpenMP threads. Built with -fopenmp, the
 * library needs libgomp.so.1, which the loader resolves to the copy torch has already loaded (same
 * soname), so both share one thread team instead of two runtimes spinning against each other. The
 * backward adds thread t's bias gradient into dbias[t] (dbias: [threads, H, n, n], zeroed by the
 * caller), so no two threads write one address.
 *
 * Why a kernel: with head_dim 8-20 the explicit formula is bound by memory traffic over the n x n
 * matrices (matmul, + bias, + mask, softmax, matmul, and as many passes again backward). Here one query
 * row of scores lives in L1 from the dot products to the output. Loops over the key index j are the
 * vectorised ones (k and v are transposed per window so they are contiguous in j); the head dimension
 * is a compile-time constant for the common sizes so its loops unroll into registers.
 *
 * Returns 0, or 1 if a work buffer could not be allocated (then the outputs are incomplete).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }   /* built without OpenMP: one thread */
#endif

#ifdef SPIKEPREP_LIBMVEC
/* glibc's libmvec has vector expf variants; declaring them lets gcc vectorise expf without
 * -ffinite-math-only (which would make NaN/inf handling undefined). */
__attribute__((simd("notinbranch"))) float expf(float);
#endif

#define INLINE static inline __attribute__((always_inline))

/* Scores more than 80 below the row maximum (the shifted-window mask's -100, for one) give probability 0.
 * Left alone they would give subnormal probabilities, and subnormal arithmetic and glibc's vector expf on
 * such arguments run tens of times slower on x86; exp(-80) = 1.8e-35 is below float resolution next to
 * the row's largest term exp(0) = 1, so the result is the same to rounding. The clamp is a pass of its
 * own over memory: inside the exp loop gcc sees that clamped lanes are discarded and drops the clamp.
 * NaN passes through both passes (every comparison with it is false). */
#define SCORE_FLOOR (-80.f)

/* Flush-to-zero and denormals-are-zero for the calling thread while it runs the kernel (restored after):
 * the same reason, for products of tiny probabilities and gradients. */
#if defined(__SSE__)
#include <xmmintrin.h>
INLINE unsigned ftz_enter(void) { unsigned old = _mm_getcsr(); _mm_setcsr(old | 0x8040); return old; }
INLINE void ftz_leave(unsigned old) { _mm_setcsr(old); }
#else
INLINE unsigned ftz_enter(void) { return 0; }
INLINE void ftz_leave(unsigned old) { (void)old; }
#endif

INLINE void transpose(const float *src, float *dst, long rows, long cols) {
    for (long r = 0; r < rows; r++)
        for (long c = 0; c < cols; c++) dst[c * rows + r] = src[r * cols + c];
}

/* Blocks of VL = 16 keys in one vector (GCC/clang vector extension: one AVX-512 or two AVX registers,
 * split further on narrower ISAs), so a row's running sums stay in registers across the head dimension
 * instead of going through memory once per channel; loads and stores are unaligned. Keys past the last
 * full block (n not a multiple of VL, small windows) take the scalar tails. */
#define VL 16
typedef float vec __attribute__((vector_size(4 * VL)));
typedef int ivec __attribute__((vector_size(4 * VL)));
typedef float vecu __attribute__((vector_size(4 * VL), aligned(4), may_alias));
#define LD(p) (*(const vecu *)(p))
#define ST(p, x) (*(vecu *)(p) = (x))
INLINE float hsum(vec x) { float a = 0.f; for (int t = 0; t < VL; t++) a += x[t]; return a; }

/* s[j] = bias_row[j] + mask_row[j] + scale * q_i . k_j */
INLINE void scores(const float *qi, const float *kT, const float *brow, const float *mrow, float *s,
                   long n, const long d, float scale) {
    float qs[d];
    for (long c = 0; c < d; c++) qs[c] = qi[c] * scale;
    long j = 0;
    for (; j + VL <= n; j += VL) {
        vec a = LD(brow + j) + LD(mrow + j);
        for (long c = 0; c < d; c++) a += qs[c] * LD(kT + c * n + j);
        ST(s + j, a);
    }
    for (; j < n; j++) {
        float a = brow[j] + mrow[j];
        for (long c = 0; c < d; c++) a += qs[c] * kT[c * n + j];
        s[j] = a;
    }
}

/* o[c] = scale * sum_j w[j] rows[c][j] for c < d (rows: [d, n]) */
INLINE void weighted_sums(const float *w, const float *rows, float *o, long n, const long d, float scale) {
    vec acc[d];
    for (long c = 0; c < d; c++) acc[c] = (vec){0};
    long j = 0;
    for (; j + VL <= n; j += VL) {
        vec wb = LD(w + j);
        for (long c = 0; c < d; c++) acc[c] += wb * LD(rows + c * n + j);
    }
    for (long c = 0; c < d; c++) {
        float a = hsum(acc[c]);
        for (long t = j; t < n; t++) a += w[t] * rows[c * n + t];
        o[c] = a * scale;
    }
}

/* max_j s[j], vectorised (a NaN lane is skipped here; it still reaches the output through s[j] - m) */
INLINE float row_max(const float *s, long n) {
    float m = s[0];
    long j = 0;
    if (n >= VL) {
        vec acc = LD(s);
        for (j = VL; j + VL <= n; j += VL) {
            vec x = LD(s + j);
            ivec gt = x > acc;                        /* lanes: -1 where x wins, else 0 */
            acc = (vec)((gt & (ivec)x) | (~gt & (ivec)acc));
        }
        for (int t = 0; t < VL; t++) m = acc[t] > m ? acc[t] : m;
    }
    for (; j < n; j++) m = s[j] > m ? s[j] : m;
    return m;
}

/* s[j] <- exp(s[j] - m) * inv, 0 below the floor */
INLINE void probabilities(float *s, long n, float m, float inv) {
    for (long j = 0; j < n; j++) { float x = s[j] - m; s[j] = x < SCORE_FLOOR ? SCORE_FLOOR : x; }
    for (long j = 0; j < n; j++) { float e = expf(s[j]); s[j] = s[j] <= SCORE_FLOOR ? 0.f : e * inv; }
}

/* One (window, head) pair: out rows and the stats the backward needs. Buffers: kT, vT [d, n], s [n],
 * zeros [n]. */
INLINE void forward_pair(const float *q, const float *k, const float *v, const float *bias, const float *mask,
                         float *stats, float *out, long bh, long H, long n, const long d, long G, float scale,
                         float *kT, float *vT, float *s, const float *zeros) {
    long b = bh / H, h = bh % H;
    const float *qb = q + bh * n * d, *bb = bias + h * n * n;
    const float *mb = mask ? mask + (b % G) * n * n : NULL;
    transpose(k + bh * n * d, kT, n, d);
    transpose(v + bh * n * d, vT, n, d);
    for (long i = 0; i < n; i++) {
        scores(qb + i * d, kT, bb + i * n, mb ? mb + i * n : zeros, s, n, d, scale);
        float m = row_max(s, n), sum = 0.f;
        probabilities(s, n, m, 1.f);
        for (long j = 0; j < n; j++) sum += s[j];
        float inv = 1.f / sum;
        stats[(bh * n + i) * 2] = m;
        stats[(bh * n + i) * 2 + 1] = inv;
        weighted_sums(s, vT, out + (bh * n + i) * d, n, d, inv);
    }
}

/* rows[c][j] += sum_t coef[t][c] * w[t][j] for c < d, over a tile of T query rows (coef: [T, d] with row
 * stride cstride, w: [T, n]). One store per (c, key block) per tile instead of per query row: the
 * load-add-store chains of these accumulations were the backward's bottleneck. */
INLINE void add_outer_tile(const float *coef, long cstride, const float *w, float *rows, long T, long n,
                           const long d) {
    long j = 0;
    for (; j + VL <= n; j += VL)
        for (long c = 0; c < d; c++) {
            vec a = LD(rows + c * n + j);
            for (long t = 0; t < T; t++) a += coef[t * cstride + c] * LD(w + t * n + j);
            ST(rows + c * n + j, a);
        }
    for (; j < n; j++)
        for (long c = 0; c < d; c++)
            for (long t = 0; t < T; t++) rows[c * n + j] += coef[t * cstride + c] * w[t * n + j];
}

#define TILE 16   /* query rows per dk/dv accumulation */

/* One (window, head) pair of the backward. Buffers: kT, vT, dkT, dvT [d, n], p, ds [TILE, n],
 * qs [TILE, d], zeros [n]; the bias gradient is added into dbias_t [H, n, n]. */
INLINE void backward_pair(const float *q, const float *k, const float *v, const float *bias, const float *mask,
                          const float *stats, const float *dout, float *dq, float *dk, float *dv, float *dbias_t,
                          long bh, long H, long n, const long d, long G, float scale, float *kT, float *vT,
                          float *dkT, float *dvT, float *p, float *ds, float *qs, const float *zeros) {
    long nd = n * d, b = bh / H, h = bh % H;
    const float *qb = q + bh * nd, *dob = dout + bh * nd, *bb = bias + h * n * n;
    const float *mb = mask ? mask + (b % G) * n * n : NULL;
    transpose(k + bh * nd, kT, n, d);
    transpose(v + bh * nd, vT, n, d);
    memset(dkT, 0, sizeof(float) * nd);
    memset(dvT, 0, sizeof(float) * nd);
    for (long i0 = 0; i0 < n; i0 += TILE) {
        long T = n - i0 < TILE ? n - i0 : TILE;
        for (long t = 0; t < T; t++) {
            long i = i0 + t;
            float *pt = p + t * n, *dst = ds + t * n;
            scores(qb + i * d, kT, bb + i * n, mb ? mb + i * n : zeros, pt, n, d, scale);
            probabilities(pt, n, stats[(bh * n + i) * 2], stats[(bh * n + i) * 2 + 1]);
            /* dP_ij = dout_i . v_j  (scores() with zero bias and unit scale) */
            scores(dob + i * d, vT, zeros, zeros, dst, n, d, 1.f);
            /* softmax backward: dS = P * (dP - sum_j P dP) */
            float D = 0.f;
            for (long j = 0; j < n; j++) D += pt[j] * dst[j];
            float *db = dbias_t + (h * n + i) * n;
            for (long j = 0; j < n; j++) { dst[j] = pt[j] * (dst[j] - D); db[j] += dst[j]; }
            /* dq_i = scale * dS k */
            weighted_sums(dst, kT, dq + (bh * n + i) * d, n, d, scale);
            for (long c = 0; c < d; c++) qs[t * d + c] = qb[i * d + c] * scale;
        }
        add_outer_tile(dob + i0 * d, d, p, dvT, T, n, d);     /* dv_j += sum_i p_ij dout_i */
        add_outer_tile(qs, d, ds, dkT, T, n, d);              /* dk_j += scale sum_i dS_ij q_i */
    }
    transpose(dkT, dk + bh * nd, d, n);
    transpose(dvT, dv + bh * nd, d, n);
}

/* The head dimension as a compile-time constant for VRT's sizes (tiny 8/12, small 16, official 16/20),
 * a runtime value otherwise. The switch sits inside the parallel loop: OpenMP outlines the region
 * before inlining, so a constant passed from outside it would not reach the loops. */
#define BY_HEAD_DIM(d, CALL) \
    switch (d) { case 8: CALL(8); break; case 12: CALL(12); break; case 16: CALL(16); break; \
                 case 20: CALL(20); break; case 24: CALL(24); break; case 32: CALL(32); break; \
                 default: CALL(d); }

int spikeprep_attn_forward(const float *q, const float *k, const float *v, const float *bias,
                           const float *mask, float *stats, float *out, long B, long H, long n, long d,
                           long G, float scale, int threads) {
    int failed = 0;
    #pragma omp parallel num_threads(threads) reduction(|: failed)
    {
        unsigned csr = ftz_enter();
        float *kT = malloc(sizeof(float) * n * d), *vT = malloc(sizeof(float) * n * d);
        float *s = malloc(sizeof(float) * n), *zeros = calloc(n, sizeof(float));
        failed = !kT || !vT || !s || !zeros;
        #pragma omp for schedule(static)
        for (long bh = 0; bh < B * H; bh++) {
            if (failed) continue;
#define FWD(D) forward_pair(q, k, v, bias, mask, stats, out, bh, H, n, D, G, scale, kT, vT, s, zeros)
            BY_HEAD_DIM(d, FWD)
#undef FWD
        }
        free(kT); free(vT); free(s); free(zeros);
        ftz_leave(csr);
    }
    return failed;
}

int spikeprep_attn_backward(const float *q, const float *k, const float *v, const float *bias,
                            const float *mask, const float *stats, const float *dout, float *dq, float *dk,
                            float *dv, float *dbias, long B, long H, long n, long d, long G, float scale,
                            int threads) {
    long nd = n * d;
    int failed = 0;
    #pragma omp parallel num_threads(threads) reduction(|: failed)
    {
        unsigned csr = ftz_enter();
        float *kT = malloc(sizeof(float) * nd), *vT = malloc(sizeof(float) * nd);
        float *dkT = malloc(sizeof(float) * nd), *dvT = malloc(sizeof(float) * nd);
        float *p = malloc(sizeof(float) * TILE * n), *ds = malloc(sizeof(float) * TILE * n);
        float *qs = malloc(sizeof(float) * TILE * d), *zeros = calloc(n, sizeof(float));
        float *dbias_t = dbias + (long)omp_get_thread_num() * H * n * n;
        failed = !kT || !vT || !dkT || !dvT || !p || !ds || !qs || !zeros;
        #pragma omp for schedule(static)
        for (long bh = 0; bh < B * H; bh++) {
            if (failed) continue;
#define BWD(D) backward_pair(q, k, v, bias, mask, stats, dout, dq, dk, dv, dbias_t, bh, H, n, D, G, scale, \
                             kT, vT, dkT, dvT, p, ds, qs, zeros)
            BY_HEAD_DIM(d, BWD)
#undef BWD
        }
        free(kT); free(vT); free(dkT); free(dvT); free(p); free(ds); free(qs); free(zeros);
        ftz_leave(csr);
    }
    return failed;
}
