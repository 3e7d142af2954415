/* Fused CPU kernels for hrrformer's layer parts (hrrformer.parts): the short convolution with its
 * SiLU, and the output gate's RMSNorm times SiLU, each forward and backward in one pass over its
 * tensors. Built at first use by hrrformer.ops.native.loader with the system C compiler
 * (-O3 -march=native -fopenmp) and called through ctypes; the Python side allocates every tensor.
 *
 * Element types: 0 = float32, 1 = bfloat16 (stored as uint16, converted here: up by a 16-bit shift,
 * down by round-to-nearest-even as PyTorch does). Arithmetic is float32 throughout.
 *
 * Short convolution of the rows i < L = K−1 + T of an input made of halo (B, K−1, C) and u (B, T, C)
 * (row i < K − 1 is the halo's, zeros where there is none; row i ≥ K − 1 is u's row i − K + 1),
 * w (C, K), channels innermost:
 *     z_t[c] = Σ_j w[c,j] in_{t+j}[c],  y_t[c] = SiLU(z_t[c]) = z σ(z),  t < T
 * backward, g = ∂/∂y (B, T, C) float32:
 *     gz_t = g_t σ(z_t) (1 + z_t (1 − σ(z_t)))
 *     ∂in_s[c] = Σ_j w[c,j] gz_{s−j}[c]    (0 ≤ s − j < T; rows of the halo and of u as above)
 *     ∂w[c,j] = Σ_{b,t} gz_t[c] in_{t+j}[c]
 * y (forward) and g (backward) may be laid out as heads: channel c = i·G + e (group i of G channels,
 * e < G) of row (b, t) is element offsets[i] + b·stride_b + t·stride_t + e, so that the convolution
 * writes q, k and v straight into (n, B, h, T, d) (offsets: the groups' starts) and reads their
 * gradient from there; a plain (B, T, C) is one group of C, stride_b = T·C, stride_t = C.
 * Work is split into blocks of rows (b, a stretch of t); a backward block recomputes the K − 1 gz
 * rows before its first, and each thread sums ∂w in its own row of a (threads, C, K) buffer.
 *
 * Output gate, rows r = (b, t, head) of d channels, z (B, T, h, d) = x W_g, γ (d), o (B, T, h, d) at
 * any strides (b·o_sb + t·o_st + head·o_sh; channels contiguous), so that it reads the attention's
 * (B, h, T, d) output in place; the result is (B, T, h, d) contiguous, ∂o is laid out as o:
 *     ρ_r = 1 / sqrt(mean_c o_rc² + ε),  n = o ρ,  out = n γ SiLU(z)
 * backward, G = ∂/∂out (R, d) float32:
 *     ∂γ_c = Σ_r G n SiLU(z),  ∂z = G γ n SiLU'(z),  ∂n = G γ SiLU(z),
 *     ∂o = ρ (∂n − n · mean_c(∂n n))
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { F32 = 0, BF16 = 1 };

static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0; /* NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

/* dst[i] = src[i] as float32, i < n, from a row of type `type` */
static inline void load_row(float *restrict dst, const void *src, int type, int64_t n) {
    if (type == F32) {
        const float *restrict s = (const float *)src;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) dst[i] = s[i];
    } else {
        const uint16_t *s = (const uint16_t *)src;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
    }
}

static inline void store_row(void *dst, const float *restrict src, int type, int64_t n) {
    if (type == F32) {
        float *restrict d = (float *)dst;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) d[i] = src[i];
    } else {
        uint16_t *d = (uint16_t *)dst;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
    }
}

static inline size_t type_size(int type) { return type == F32 ? 4 : 2; }

/* e^x in float32 without libm, so that loops over channels vectorise: Cephes' expf (range reduction
 * x = n ln 2 + r, |r| ≤ ln 2 / 2, a degree-6 polynomial, 2^n from the exponent bits), within ~2 ulp.
 * x is clamped to [−87.3, 88] (e^x stays a normal float); a NaN passes the clamps and the
 * polynomial, and comes out NaN. */
static inline float exp_f32(float x) {
    x = x > 88.0f ? 88.0f : x;
    x = x < -87.3365447f ? -87.3365447f : x;
    float n = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

static inline float sigmoid(float z) { return 1.0f / (1.0f + exp_f32(-z)); }

/* Rows of one block: b fixed, t in [t0, t1). */
static inline void block_of(int64_t block, int64_t blocks_per_seq, int64_t rows, int64_t T, int64_t *b,
                            int64_t *t0, int64_t *t1) {
    *b = block / blocks_per_seq;
    *t0 = (block % blocks_per_seq) * rows;
    *t1 = *t0 + rows < T ? *t0 + rows : T;
}

/* wt (K, C) = w (C, K) transposed, so that every inner loop runs over contiguous channels */
static float *transpose_filter(const float *w, int64_t C, int64_t K) {
    float *wt = malloc((size_t)(C * K) * sizeof(float));
    for (int64_t c = 0; c < C; ++c)
        for (int64_t j = 0; j < K; ++j) wt[j * C + c] = w[c * K + j];
    return wt;
}

/* the float32 row (C) into a row (b, t) of x laid out as groups (see the header) */
static inline void store_grouped(void *x, int type, const int64_t *offsets, int64_t group, int64_t at, const float *row,
                                 int64_t C) {
    const size_t size = type_size(type);
    for (int64_t i = 0; i < C / group; ++i)
        store_row((char *)x + (size_t)(offsets[i] + at) * size, row + i * group, type, group);
}

static inline void load_grouped(float *row, const void *x, int type, const int64_t *offsets, int64_t group, int64_t at,
                                int64_t C) {
    const size_t size = type_size(type);
    for (int64_t i = 0; i < C / group; ++i)
        load_row(row + i * group, (const char *)x + (size_t)(offsets[i] + at) * size, type, group);
}

/* One sequence's input rows (see the header): u's and the halo's (NULL: zeros) */
typedef struct {
    const char *u, *halo;
    int type;
    int64_t K, C;
} Input;

/* sequence b's input: u (B, T, C) and halo (B, K − 1, C) or NULL */
static inline Input input_of(const void *u, const void *halo, int type, int64_t b, int64_t T, int64_t K, int64_t C) {
    const size_t row = type_size(type) * (size_t)C;
    const Input in = {(const char *)u + (size_t)(b * T) * row,
                      halo ? (const char *)halo + (size_t)(b * (K - 1)) * row : NULL, type, K, C};
    return in;
}

/* CALL(k) with k a constant for the common kernel sizes, so that the loops over taps unroll */
#define WITH_CONSTANT_K(K, CALL)                                                                                       \
    switch (K) {                                                                                                       \
    case 2: CALL(2); break;                                                                                            \
    case 3: CALL(3); break;                                                                                            \
    case 4: CALL(4); break;                                                                                            \
    default: CALL(K);                                                                                                  \
    }

/* Input row i as float32: in place where the input is float32, else converted into `slot`;
 * `zeros` (C) where there is no halo. Kept in `held` (K pointers, row i at i mod K). */
static inline void load_input(const float **held, float *slot, const float *zeros, Input in, int64_t i) {
    const size_t size = type_size(in.type) * (size_t)in.C;
    const char *src = i >= in.K - 1 ? in.u + (size_t)(i - in.K + 1) * size : in.halo ? in.halo + (size_t)i * size : NULL;
    if (!src) {
        held[i % in.K] = zeros;
    } else if (in.type == F32) {
        held[i % in.K] = (const float *)src;
    } else {
        load_row(slot, src, in.type, in.C);
        held[i % in.K] = slot;
    }
}

/* the gradient of input row i into u's or the halo's (dropped where there is no halo) */
static inline void store_input_gradient(char *grad_u, char *grad_halo, Input in, int64_t i, const float *row) {
    const size_t size = type_size(in.type) * (size_t)in.C;
    if (i >= in.K - 1)
        store_row(grad_u + (size_t)(i - in.K + 1) * size, row, in.type, in.C);
    else if (grad_halo)
        store_row(grad_halo + (size_t)i * size, row, in.type, in.C);
}

/* The work of one row, every tap in one loop over the channels. Always inlined into a switch over
 * the kernel size (WITH_CONSTANT_K in conv_silu_forward and conv_silu_backward), so that K is a
 * constant there, the loop over taps unrolls and the loop over channels vectorises. u[j] is input
 * row t + j, as float32. */
#define ROW_FUNCTION static inline __attribute__((always_inline))

/* Σ_j w[j][c] x[j][c] for channel c */
ROW_FUNCTION float taps(int64_t K, const float *restrict wt, const float *const *x, int64_t C, int64_t c) {
    float total = 0.0f;
    for (int64_t j = 0; j < K; ++j) total += wt[j * C + c] * x[j][c];
    return total;
}

/* y[c] = SiLU(Σ_j w[j][c] u[j][c]) */
ROW_FUNCTION void forward_row(int64_t K, float *restrict y, const float *const *u, const float *restrict wt,
                              int64_t C) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
        const float z = taps(K, wt, u, C, c);
        y[c] = z * sigmoid(z);
    }
}

/* gz[c] = g[c] SiLU'(z[c]) for z = Σ_j w[j][c] u[j][c]; with ∂w, gw[j][c] += gz[c] u[j][c] */
ROW_FUNCTION void backward_row(int64_t K, int with_filter, float *restrict gz, const float *restrict g,
                               const float *const *u, const float *restrict wt, float *restrict gw, int64_t C) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
        const float z = taps(K, wt, u, C, c);
        float sg = sigmoid(z), d = g[c] * sg * (1.0f + z * (1.0f - sg));
        gz[c] = d;
        if (with_filter)
            for (int64_t j = 0; j < K; ++j) gw[j * C + c] += d * u[j][c];
    }
}

/* gu[c] = Σ_j w[j][c] gz[j][c], gz[j] = ∂z_{s−j} (a row of zeros outside [0, T)) */
ROW_FUNCTION void input_gradient_row(int64_t K, float *restrict gu, const float *const *gz, const float *restrict wt,
                                     int64_t C) {
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) gu[c] = taps(K, wt, gz, C, c);
}

/* One forward block: rows [t0, t1) of sequence b. Input row i is held in ring slot i mod K. */
ROW_FUNCTION void forward_block(int64_t K, Input in, const float *wt, void *y, int y_type,
                                const int64_t *y_offsets, int64_t group, int64_t at, int64_t stride_t, int64_t t0,
                                int64_t t1, int64_t C, float *ring, const float *zeros, float *out) {
    const float *held[64], *rows[64];
    for (int64_t i = t0; i < t0 + K - 1; ++i) load_input(held, ring + (i % K) * C, zeros, in, i);
    const int direct = y_type == F32 && group == C; /* y's rows are float32 rows of C: write there */
    for (int64_t t = t0; t < t1; ++t) {
        const int64_t newest = t + K - 1;
        load_input(held, ring + (newest % K) * C, zeros, in, newest);
        for (int64_t j = 0; j < K; ++j) rows[j] = held[(t + j) % K];
        float *row = direct ? (float *)y + y_offsets[0] + at + t * stride_t : out;
        forward_row(K, row, rows, wt, C);
        if (!direct) store_grouped(y, y_type, y_offsets, group, at + t * stride_t, out, C);
    }
}

void conv_silu_forward(const void *u, const void *halo, int u_type, const float *w, void *y, int y_type, const int64_t *y_offsets,
                       int64_t group, int64_t stride_b, int64_t stride_t, int64_t B, int64_t T, int64_t C, int64_t K,
                       int64_t rows, int threads) {
    const int64_t per_seq = (T + rows - 1) / rows, blocks = B * per_seq;
    float *wt = transpose_filter(w, C, K);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float *ring = calloc((size_t)((K + 2) * C), sizeof(float)), *zeros = ring + K * C, *out = zeros + C;
#pragma omp for schedule(static)
        for (int64_t block = 0; block < blocks; ++block) {
            int64_t b, t0, t1;
            block_of(block, per_seq, rows, T, &b, &t0, &t1);
            const Input in = input_of(u, halo, u_type, b, T, K, C);
            const int64_t at = b * stride_b;
#define FORWARD(k) forward_block(k, in, wt, y, y_type, y_offsets, group, at, stride_t, t0, t1, C, ring, zeros, out)
            WITH_CONSTANT_K(K, FORWARD)
#undef FORWARD
        }
        free(ring);
    }
    free(wt);
}

/* One backward block: ∂u rows [s0, s1) of sequence b, after the gz rows from s0 − K + 1 that they
 * read; ∂w from the gz rows of the block itself. Rings of K rows: input rows (slot i mod K) and
 * gz rows (slot t mod K); `zeros` stands in for gz rows outside [0, T). */
ROW_FUNCTION void backward_block(int64_t K, const void *g, int g_type, const int64_t *g_offsets, int64_t group,
                                 int64_t at, int64_t stride_t, Input in, const float *wt, char *grad_u, char *grad_halo,
                                 float *gw, int64_t s0, int64_t s1, int64_t T, int64_t C, float *ring, float *gz_ring,
                                 const float *zeros, float *g_row, float *gu) {
    const int64_t L = T + K - 1, first = s0 - K + 1 > 0 ? s0 - K + 1 : 0;
    const float *held[64], *rows[64], *gzs[64];
    for (int64_t i = first; i < first + K - 1 && i < L; ++i) load_input(held, ring + (i % K) * C, zeros, in, i);
    for (int64_t t = first; t < s1; ++t) {
        if (t < T) {
            const int64_t newest = t + K - 1;
            load_input(held, ring + (newest % K) * C, zeros, in, newest);
            for (int64_t j = 0; j < K; ++j) rows[j] = held[(t + j) % K];
            const float *g_t = g_row; /* g's row t, read in place where it is a float32 row of C */
            if (g_type == F32 && group == C)
                g_t = (const float *)g + g_offsets[0] + at + t * stride_t;
            else
                load_grouped(g_row, g, g_type, g_offsets, group, at + t * stride_t, C);
            backward_row(K, t >= s0, gz_ring + (t % K) * C, g_t, rows, wt, gw, C);
        }
        if (t < s0 || (t < K - 1 && !grad_halo)) continue;
        for (int64_t j = 0; j < K; ++j) gzs[j] = t - j >= 0 && t - j < T ? gz_ring + ((t - j) % K) * C : zeros;
        input_gradient_row(K, gu, gzs, wt, C);
        store_input_gradient(grad_u, grad_halo, in, t, gu);
    }
}

void conv_silu_backward(const void *g, int g_type, const int64_t *g_offsets, int64_t group, int64_t stride_b,
                        int64_t stride_t, const void *u, const void *halo, int u_type, const float *w, void *grad_u,
                        void *grad_halo, float *grad_w,
                        int64_t B, int64_t T, int64_t C, int64_t K, int64_t rows, int threads) {
    const int64_t L = T + K - 1, per_seq = (L + rows - 1) / rows, blocks = B * per_seq;
    const size_t us = type_size(u_type);
    float *wt = transpose_filter(w, C, K);
    int team = threads > 1 ? threads : 1;
    float *partial = calloc((size_t)(team * K * C), sizeof(float)); /* (threads, K, C) */
#pragma omp parallel num_threads(team) if (team > 1)
    {
        int me = 0;
#ifdef _OPENMP
        me = omp_get_thread_num();
#endif
        float *gw = partial + (size_t)me * K * C;
        float *ring = calloc((size_t)(2 * K + 3) * C, sizeof(float));
        float *gz_ring = ring + K * C, *zeros = gz_ring + K * C, *g_row = zeros + C, *gu = g_row + C;
#pragma omp for schedule(static)
        for (int64_t block = 0; block < blocks; ++block) {
            int64_t b, s0, s1;
            block_of(block, per_seq, rows, L, &b, &s0, &s1);
            const size_t row = (size_t)C * us;
            const Input in = input_of(u, halo, u_type, b, T, K, C);
            char *gu_b = (char *)grad_u + (size_t)(b * T) * row;
            char *gh_b = grad_halo ? (char *)grad_halo + (size_t)(b * (K - 1)) * row : NULL;
            const int64_t at = b * stride_b;
#define BACKWARD(k)                                                                                                    \
    backward_block(k, g, g_type, g_offsets, group, at, stride_t, in, wt, gu_b, gh_b, gw, s0, s1, T, C, ring, gz_ring, \
                   zeros, g_row, gu)
            WITH_CONSTANT_K(K, BACKWARD)
#undef BACKWARD
        }
        free(ring);
    }
    for (int64_t c = 0; c < C; ++c)
        for (int64_t j = 0; j < K; ++j) {
            float total = 0.0f;
            for (int m = 0; m < team; ++m) total += partial[((size_t)m * K + j) * C + c];
            grad_w[c * K + j] = total;
        }
    free(partial);
    free(wt);
}

/* Output gate forward, one position (b, t) at a time: its h heads of d channels; rho (B·T·h) is
 * kept for the backward. z and out are (B, T, h·d) rows, o is read at its strides. */
void gate_forward(const float *o, int64_t o_sb, int64_t o_st, int64_t o_sh, const void *z, int z_type,
                  const float *gamma, void *out, int out_type, float *rho, int64_t B, int64_t T, int64_t h, int64_t d,
                  float eps, int threads) {
    const size_t zs = type_size(z_type), os = type_size(out_type);
    const int64_t E = h * d;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        float *zr = malloc((size_t)(2 * E) * sizeof(float)), *row = zr + E;
#pragma omp for schedule(static)
        for (int64_t bt = 0; bt < B * T; ++bt) {
            const float *ob = o + (bt / T) * o_sb + (bt % T) * o_st;
            load_row(zr, (const char *)z + (size_t)bt * E * zs, z_type, E);
#pragma omp simd
            for (int64_t c = 0; c < E; ++c) zr[c] = zr[c] * sigmoid(zr[c]); /* SiLU(z) */
            for (int64_t head = 0; head < h; ++head) {
                const float *restrict orow = ob + head * o_sh;
                const float *restrict gate = zr + head * d;
                float *restrict y = row + head * d;
                float square = 0.0f;
#pragma omp simd reduction(+ : square)
                for (int64_t c = 0; c < d; ++c) square += orow[c] * orow[c];
                const float p = 1.0f / sqrtf(square / (float)d + eps);
                rho[bt * h + head] = p;
#pragma omp simd
                for (int64_t c = 0; c < d; ++c) y[c] = orow[c] * p * gamma[c] * gate[c];
            }
            store_row((char *)out + (size_t)bt * E * os, row, out_type, E);
        }
        free(zr);
    }
}

void gate_backward(const void *grad, int grad_type, const float *o, int64_t o_sb, int64_t o_st, int64_t o_sh,
                   const void *z, int z_type, const float *gamma, const float *rho, float *grad_o, void *grad_z,
                   float *grad_gamma, int64_t B, int64_t T, int64_t h, int64_t d, int threads) {
    const size_t zs = type_size(z_type), gs = type_size(grad_type);
    const int64_t E = h * d;
    int team = threads > 1 ? threads : 1;
    float *partial = calloc((size_t)(team * d), sizeof(float));
#pragma omp parallel num_threads(team) if (team > 1)
    {
        int me = 0;
#ifdef _OPENMP
        me = omp_get_thread_num();
#endif
        float *gg = partial + (size_t)me * d;
        float *zr = malloc((size_t)(4 * E) * sizeof(float)), *silu = zr + E, *dsilu = silu + E, *gr = dsilu + E;
#pragma omp for schedule(static)
        for (int64_t bt = 0; bt < B * T; ++bt) {
            const int64_t at = (bt / T) * o_sb + (bt % T) * o_st;
            load_row(zr, (const char *)z + (size_t)bt * E * zs, z_type, E);
            load_row(gr, (const char *)grad + (size_t)bt * E * gs, grad_type, E);
#pragma omp simd
            for (int64_t c = 0; c < E; ++c) { /* SiLU(z) and its derivative σ(z)(1 + z(1 − σ(z))) */
                const float sg = sigmoid(zr[c]);
                silu[c] = zr[c] * sg;
                dsilu[c] = sg * (1.0f + zr[c] * (1.0f - sg));
            }
            for (int64_t head = 0; head < h; ++head) {
                const int64_t k = head * d;
                const float *restrict orow = o + at + head * o_sh;
                float *restrict gorow = grad_o + at + head * o_sh;
                const float p = rho[bt * h + head];
                float dot = 0.0f; /* Σ_c ∂n n */
#pragma omp simd reduction(+ : dot)
                for (int64_t c = 0; c < d; ++c) {
                    const float n = orow[c] * p, g = gr[k + c];
                    const float dn = g * gamma[c] * silu[k + c];
                    gg[c] += g * n * silu[k + c];
                    zr[k + c] = g * gamma[c] * n * dsilu[k + c]; /* ∂z, over z's row */
                    gorow[c] = dn;                               /* ∂n for now */
                    dot += dn * n;
                }
                const float mean = dot / (float)d;
#pragma omp simd
                for (int64_t c = 0; c < d; ++c) gorow[c] = p * (gorow[c] - orow[c] * p * mean);
            }
            store_row((char *)grad_z + (size_t)bt * E * zs, zr, z_type, E);
        }
        free(zr);
    }
    for (int64_t c = 0; c < d; ++c) {
        float total = 0.0f;
        for (int m = 0; m < team; ++m) total += partial[(size_t)m * d + c];
        grad_gamma[c] = total;
    }
    free(partial);
}
