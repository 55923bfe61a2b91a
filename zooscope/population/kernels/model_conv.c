/* A convolution of K models at once on the per-model layout of the population program, with the
   max-pool that follows it (and a ReLU after that) in the same pass.

   conv[k, o, i, j, :] = bias[k, o] + sum over c, di, dj of
                         weight[k, o, c, di, dj] * in[k, c, i*sh + di*dh, j*sw + dj*dw, :]
   out[k, o, pi, pj, :] = max(floor, max over a, b < pool of conv[k, o, pi*pool + a, pj*pool + b, :])

   in     [K, C, H, W, n]    each model's activation, inputs innermost
   weight [K, O, C, kh, kw]  bias [K, O], or NULL
   out    [K, O, Ho/pool, Wo/pool, n]  n a multiple of LANES (the program pads its inputs to 16);
          pool 1 is the plain convolution, floor -INFINITY no ReLU, 0 a ReLU

   Each model's filters differ, so over all models this is a grouped convolution; with 8 channels
   a model, oneDNN's grouped kernel ran CNN-s's 5x5 layer at about 35 GFLOP/s. Here the vectors
   run along the inputs, which every model sees alike: a tile of up to 3 output channels by 4
   output columns by LANES inputs stays in registers while the taps stream past, each loaded
   vector feeding up to 3 multiply-adds, and the pool is a max over tiles, so the positions it
   would read are never written.

   Built at run time by zooscope/population/compiled_kernels.py (-O3 -march=native -fopenmp); the OpenMP
   threads are torch's own (see slab_max_product.c). */

#include "vector.h"
#include "winograd.h"

/* tile bounds: best and acc take 2 * MAX_OB * MAX_JB vector registers (24 of AVX-512's 32; with
   8-float vectors on AVX2's 16 registers best spills, which measured no slower than smaller tiles).
   The program builds this file in each of compiled_kernels.BUILD_VARIANTS and keeps the fastest
   here (compiled_kernels.kernel_variant): on a Zen 4 EPYC 8 x 1 and 6 x 2 ran 1.3-1.7x as fast as
   3 x 4, the F(2x2, 3x3) Winograd path below CNN3's second layer 1.7x as fast again, and the
   F(4x4, 3x3) one 1.28x as fast as that. */
#ifndef MAX_OB
#define MAX_OB 3
#endif
#ifndef MAX_JB
#define MAX_JB 4
#endif
_Static_assert(MAX_OB >= 1 && MAX_OB <= 8 && MAX_JB >= 1 && MAX_JB <= 4, "any_tile has cases up to 8 x 4");

struct shape {
    long channels, height, width, n, outs, kh, kw, sh, sw, dh, dw, pool, out_h, out_w;
    float floor;
};

/* Output channels [o0, o0 + OB) x pooled columns [pj0, pj0 + JB) of pooled row pi, inputs
   [v, v + LANES), one model. OB and JB are constants at every call site, so the loops over them
   unroll into registers. */
static inline __attribute__((always_inline)) void tile(const float *in, const float *weight, const float *bias,
                                                       float *out, const struct shape *s, long o0, long pi,
                                                       long pj0, long v, const int OB, const int JB) {
    const long filter = s->channels * s->kh * s->kw; /* one output channel's weights */
    vec best[MAX_OB][MAX_JB];
    for (int o = 0; o < OB; o++)
        for (int j = 0; j < JB; j++) best[o][j] = broadcast(s->floor);
    for (long a = 0; a < s->pool; a++)
        for (long b = 0; b < s->pool; b++) {
            long i = pi * s->pool + a;
            vec acc[MAX_OB][MAX_JB];
            for (int o = 0; o < OB; o++)
                for (int j = 0; j < JB; j++) acc[o][j] = broadcast(bias ? bias[o0 + o] : 0.0f);
            for (long c = 0; c < s->channels; c++)
                for (long di = 0; di < s->kh; di++) {
                    const float *row = in + ((c * s->height + i * s->sh + di * s->dh) * s->width) * s->n + v;
                    const float *taps = weight + o0 * filter + (c * s->kh + di) * s->kw;
                    for (long dj = 0; dj < s->kw; dj++) {
                        vec x[MAX_JB];
                        for (int j = 0; j < JB; j++)
                            x[j] = load(row + (((pj0 + j) * s->pool + b) * s->sw + dj * s->dw) * s->n);
                        for (int o = 0; o < OB; o++) {
                            float w = taps[o * filter + dj];
                            for (int j = 0; j < JB; j++) acc[o][j] += w * x[j];
                        }
                    }
                }
            for (int o = 0; o < OB; o++)
                for (int j = 0; j < JB; j++) best[o][j] = nan_max(best[o][j], acc[o][j]);
        }
    for (int o = 0; o < OB; o++)
        for (int j = 0; j < JB; j++)
            memcpy(out + (((o0 + o) * s->out_h + pi) * s->out_w + pj0 + j) * s->n + v, &best[o][j], sizeof(vec));
}

/* Cases only for blocks that fit the tile bounds (ob <= MAX_OB, jb <= MAX_JB at run time): the
   others would index past best and acc, and the compiler warns of that even in dead code. */
#define TILE_CASE(OB, JB)                                                                  \
    case (OB) * 8 + (JB):                                                                  \
        if ((OB) <= MAX_OB && (JB) <= MAX_JB) tile(in, weight, bias, out, s, o0, pi, pj0, v, OB, JB); \
        break;
#define TILE_ROW(OB) TILE_CASE(OB, 1) TILE_CASE(OB, 2) TILE_CASE(OB, 3) TILE_CASE(OB, 4)

static void any_tile(const float *in, const float *weight, const float *bias, float *out, const struct shape *s,
                     long o0, long pi, long pj0, long v, int ob, int jb) {
    switch (ob * 8 + jb) {
        TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4) TILE_ROW(5) TILE_ROW(6) TILE_ROW(7) TILE_ROW(8)
    }
}

/* Blocks of at most `most`, as even as possible: 6 channels are 3 + 3, 8 columns 4 + 4. */
static int block_size(long total, long most) {
    long blocks = (total + most - 1) / most;
    return (int)((total + blocks - 1) / blocks);
}

#if WINOGRAD
/* m[o][j][p] = sum over c of u[p][c][o0 + o] * x[c][tj0 + j][p], for the OB x JB block; u is one
   model's [WINO_P][channels][outs], x the block row's transformed inputs [channels][tiles][WINO_P] */
static inline __attribute__((always_inline)) void winograd_block(const float *u, const vec *x, vec *m, long channels,
                                                                  long outs, long tiles, long o0, long tj0,
                                                                  const int OB, const int JB) {
    for (int p = 0; p < WINO_P; p++) {
        vec acc[MAX_OB][MAX_JB];
        for (int o = 0; o < OB; o++)
            for (int j = 0; j < JB; j++) acc[o][j] = (vec){};
        for (long c = 0; c < channels; c++) {
            const float *w = u + (p * channels + c) * outs + o0;
            vec xs[MAX_JB];
            for (int j = 0; j < JB; j++) xs[j] = x[(c * tiles + tj0 + j) * WINO_P + p];
            for (int o = 0; o < OB; o++)
                for (int j = 0; j < JB; j++) acc[o][j] += w[o] * xs[j];
        }
        for (int o = 0; o < OB; o++)
            for (int j = 0; j < JB; j++) m[(o * tiles + tj0 + j) * WINO_P + p] = acc[o][j];
    }
}

#define WINO_CASE(OB, JB)                                                                       \
    case (OB) * 8 + (JB):                                                                       \
        if ((OB) <= MAX_OB && (JB) <= MAX_JB) winograd_block(u, x, m, channels, outs, tiles, o0, tj0, OB, JB); \
        break;
#define WINO_ROW(OB) WINO_CASE(OB, 1) WINO_CASE(OB, 2) WINO_CASE(OB, 3) WINO_CASE(OB, 4)

static void any_winograd_block(const float *u, const vec *x, vec *m, long channels, long outs, long tiles,
                               long o0, long tj0, int ob, int jb) {
    switch (ob * 8 + jb) {
        WINO_ROW(1) WINO_ROW(2) WINO_ROW(3) WINO_ROW(4) WINO_ROW(5) WINO_ROW(6) WINO_ROW(7) WINO_ROW(8)
    }
}

/* Each thread transforms the filters of the model at hand (its iterations run model by model) into
   its own buffer, where the multiplies find them in L2: transformed once per call for every model
   instead, F(4x4, 3x3)'s filters of CNN3's later layers were 18 MiB written and read back from
   memory, and the layers ran slower with them (docs/benchmarks.md: 14.77 against 14.07 ms, 2.54
   against 2.06 ms, before counting the call's transform). */
static void winograd_conv(const float *in, const float *weight, const float *bias, float *out, long models,
                          long channels, long height, long width, long n, long outs, float floor) {
    long out_h = (height - 2) / 2, out_w = (width - 2) / 2; /* pooled: the pool drops an odd border */
    if (out_h <= 0 || out_w <= 0) return;                  /* a 3x3 map pools to nothing */
    /* blocks of WINO_POOLED x WINO_POOLED pooled outputs; the last row and column of blocks may
       reach past the map */
    long tiles_h = (out_h + WINO_POOLED - 1) / WINO_POOLED, tiles = (out_w + WINO_POOLED - 1) / WINO_POOLED;
    int ob = block_size(outs, MAX_OB), jb = block_size(tiles, MAX_JB);
    const long per_model = WINO_P * channels * outs; /* one model's transformed filters */
    vec floor_v = broadcast(floor);
#pragma omp parallel
    {
        /* this thread's transformed block row of inputs [C][tiles][WINO_P], products
           [OB][tiles][WINO_P] and the transformed filters u [WINO_P][C][O] of model u_model */
        vec *x = aligned_alloc(sizeof(vec), sizeof(vec) * channels * tiles * WINO_P);
        vec *m = aligned_alloc(sizeof(vec), sizeof(vec) * ob * tiles * WINO_P);
        size_t u_bytes = (sizeof(float) * per_model + sizeof(vec) - 1) / sizeof(vec) * sizeof(vec);
        float *u = aligned_alloc(sizeof(vec), u_bytes);
        if (x == NULL || m == NULL || u == NULL) abort();
        long u_model = -1;
#pragma omp for collapse(2) schedule(static)
        for (long k = 0; k < models; k++)
            for (long ti = 0; ti < tiles_h; ti++)
                for (long v = 0; v < n; v += LANES) {
                    const float *in_k = in + k * channels * height * width * n;
                    if (u_model != k) {
                        transform_model_filters(weight + k * outs * channels * 9, u, outs, channels);
                        u_model = k;
                    }
                    for (long c = 0; c < channels; c++)
                        for (long tj = 0; tj < tiles; tj++)
                            block_input_transform(in_k + c * height * width * n, height, width, n, ti * WINO_STEP,
                                                  tj * WINO_STEP, v, x + (c * tiles + tj) * WINO_P);
                    for (long o0 = 0; o0 < outs; o0 += ob) {
                        int o_here = (int)(outs - o0 < ob ? outs - o0 : ob);
                        for (long tj0 = 0; tj0 < tiles; tj0 += jb) {
                            int j_here = (int)(tiles - tj0 < jb ? tiles - tj0 : jb);
                            any_winograd_block(u, x, m, channels, outs, tiles, o0, tj0, o_here, j_here);
                        }
                        for (int o = 0; o < o_here; o++) {
                            vec b = broadcast(bias ? bias[k * outs + o0 + o] : 0.0f);
                            float *out_o = out + (k * outs + o0 + o) * out_h * out_w * n;
                            for (long tj = 0; tj < tiles; tj++) {
                                vec best[WINO_POOLED * WINO_POOLED];
                                pooled_outputs(m + (o * tiles + tj) * WINO_P, b, floor_v, best);
                                store_pooled(out_o, best, ti, tj, out_h, out_w, n, v);
                            }
                        }
                    }
                }
        free(x);
        free(m);
        free(u);
    }
}
#endif

void model_conv(const float *in, const float *weight, const float *bias, float *out, long models, long channels,
                long height, long width, long n, long outs, long kh, long kw, long sh, long sw, long dh, long dw,
                long pool, float floor) {
#if WINOGRAD
    if (winograd_applies(kh, kw, sh, sw, dh, dw, pool)) {
        winograd_conv(in, weight, bias, out, models, channels, height, width, n, outs, floor);
        return;
    }
#endif
    struct shape s = {channels, height, width, n, outs, kh, kw, sh, sw, dh, dw, pool,
                      ((height - dh * (kh - 1) - 1) / sh + 1) / pool, ((width - dw * (kw - 1) - 1) / sw + 1) / pool,
                      floor};
    int ob = block_size(outs, MAX_OB), jb = block_size(s.out_w, MAX_JB);
#pragma omp parallel for collapse(2) schedule(static)
    for (long k = 0; k < models; k++)
        for (long pi = 0; pi < s.out_h; pi++) {
            const float *in_k = in + k * channels * height * width * n;
            const float *weight_k = weight + k * outs * channels * kh * kw;
            const float *bias_k = bias ? bias + k * outs : NULL;
            float *out_k = out + k * outs * s.out_h * s.out_w * n;
            for (long o0 = 0; o0 < outs; o0 += ob)
                for (long pj0 = 0; pj0 < s.out_w; pj0 += jb)
                    for (long v = 0; v < n; v += LANES) {
                        int o_here = (int)(outs - o0 < ob ? outs - o0 : ob);
                        int j_here = (int)(s.out_w - pj0 < jb ? s.out_w - pj0 : jb);
                        any_tile(in_k, weight_k, bias_k, out_k, &s, o0, pi, pj0, v, o_here, j_here);
                    }
        }
}
