/* A convolution of K models at once on the per-model layout of the population program, with the
   max-pool that follows it (and a ReLU after that) in the same pass.

   conv[k, o, i, j, :] = bias[k, o] + sum over c, di, dj of
                         weight[k, o, c, di, dj] * in[k, c, i*sh + di*dh, j*sw + dj*dw, :]
   out[k, o, pi, pj, :] = max(floor, max over a, b < pool of conv[k, o, pi*pool + a, pj*pool + b, :])

   in     [K, C, H, W, n]    each model's activation, inputs innermost
   weight [K, O, C, kh, kw]  bias [K, O], or NULL
   filters  the Winograd path's transformed weight (winograd_filters), or NULL
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

/* ---- Winograd transforms for a 3x3 convolution (stride 1, no dilation) with a 2x2 max-pool,
   built in only with WINOGRAD=1 or 2 (builds of compiled_kernels.BUILD_VARIANTS), used only for
   such layers.
   WINOGRAD=1, F(2x2, 3x3): each 2x2 block of outputs, exactly one pool window, is
   A^T [(G g G^T) . (B^T d B)] A over the 4x4 input patch d under it: 16 multiplies per input and
   output channel where the direct sum takes 36.
   WINOGRAD=2, F(4x4, 3x3): each 4x4 block of outputs, four pool windows, comes from the 6x6 patch
   under it: 36 multiplies per channel pair for 16 outputs, 1.8x fewer than F(2x2, 3x3), with
   larger transforms (amortised over the other side's channels) and larger rounding errors (the
   interpolation points 0, +-1, +-2 scale terms by up to 8; float32 stays within the parity tests'
   tolerance). A block past the map's edge reads zeros there and writes only the pooled outputs
   that exist.
   NaN propagates as in the direct sum (a NaN input reaches every output of its block, which the
   pool joins anyway); an infinite input can give NaN where the direct sum gives an infinity
   (inf - inf in the transform). */
#ifndef WINOGRAD
#define WINOGRAD 0
#endif
#if WINOGRAD
#include <stdlib.h>

#if WINOGRAD == 2
#define WINO_TILE 6 /* input patch side; the output block is WINO_TILE - 2 */
#else
#define WINO_TILE 4
#endif
#define WINO_P (WINO_TILE * WINO_TILE) /* transformed positions a block multiplies */

#if WINOGRAD == 2
/* G z for one line of 3, G = [[1/4,0,0], [-1/6,-1/6,-1/6], [-1/6,1/6,-1/6], [1/24,1/12,1/6],
   [1/24,-1/12,1/6], [0,0,1]], for LANES filters at once */
static inline __attribute__((always_inline)) void filter_line(vec z0, vec z1, vec z2, vec r[6]) {
    /* products with the reciprocals: a division per term made the transform 7x slower */
    const float sixth = 1.0f / 6, twelfth = 1.0f / 12, twenty_fourth = 1.0f / 24;
    vec even = z0 + z2, outer = z0 * twenty_fourth + z2 * sixth;
    r[0] = 0.25f * z0;
    r[1] = -(even + z1) * sixth;
    r[2] = -(even - z1) * sixth;
    r[3] = outer + z1 * twelfth;
    r[4] = outer - z1 * twelfth;
    r[5] = z2;
}

/* u = G g G^T for LANES 3x3 filters g (tap-major: g[tap] holds the tap of each filter) */
static inline __attribute__((always_inline)) void filter_transform(const vec g[9], vec u[36]) {
    vec t[6][3];
    for (int j = 0; j < 3; j++) {
        vec r[6];
        filter_line(g[j], g[3 + j], g[6 + j], r);
        for (int i = 0; i < 6; i++) t[i][j] = r[i];
    }
    for (int i = 0; i < 6; i++) filter_line(t[i][0], t[i][1], t[i][2], u + i * 6);
}

/* B^T z for one line of 6, B^T = [[4,0,-5,0,1,0], [0,-4,-4,1,1,0], [0,4,-4,-1,1,0],
   [0,-2,-1,2,1,0], [0,2,-1,-2,1,0], [0,4,0,-5,0,1]] */
static inline __attribute__((always_inline)) void input_line(const vec z[6], vec r[6]) {
    vec a = z[4] - 4.0f * z[2], b = z[3] - 4.0f * z[1];
    vec c = z[4] - z[2], d = 2.0f * (z[3] - z[1]);
    r[0] = 4.0f * z[0] - 5.0f * z[2] + z[4];
    r[1] = a + b;
    r[2] = a - b;
    r[3] = c + d;
    r[4] = c - d;
    r[5] = 4.0f * z[1] - 5.0f * z[3] + z[5];
}

/* V = B^T d B for the 6x6 patch at (i0, j0) of one channel, LANES inputs from v; of the patch only
   `rows` x `cols` lie on the map, the rest reads as zeros (their outputs are never written) */
static inline __attribute__((always_inline)) void input_transform(const float *channel, long width, long n,
                                                                   long i0, long j0, long v, int rows, int cols,
                                                                   vec out[36]) {
    vec t[6][6];
    for (int j = 0; j < 6; j++) {
        vec z[6], r[6];
        for (int i = 0; i < 6; i++)
            z[i] = i < rows && j < cols ? load(channel + ((i0 + i) * width + j0 + j) * n + v) : (vec){};
        input_line(z, r);
        for (int i = 0; i < 6; i++) t[i][j] = r[i];
    }
    for (int i = 0; i < 6; i++) input_line(t[i], out + i * 6);
}

/* A^T z for one line of 6, A^T = [[1,1,1,1,1,0], [0,1,-1,2,-2,0], [0,1,1,4,4,0], [0,1,-1,8,-8,1]] */
static inline __attribute__((always_inline)) void output_line(const vec z[6], vec r[4]) {
    vec a = z[1] + z[2], b = z[1] - z[2], c = z[3] + z[4], d = z[3] - z[4];
    r[0] = z[0] + a + c;
    r[1] = b + 2.0f * d;
    r[2] = a + 4.0f * c;
    r[3] = b + 8.0f * d + z[5];
}

/* the 2x2 pooled outputs max(floor, max over each pool window of A^T m A + bias), row-major */
static inline void pooled_outputs(const vec m[36], vec bias, vec floor, vec best[4]) {
    vec s[4][6], y[4][4];
    for (int j = 0; j < 6; j++) {
        vec z[6], r[4];
        for (int i = 0; i < 6; i++) z[i] = m[i * 6 + j];
        output_line(z, r);
        for (int i = 0; i < 4; i++) s[i][j] = r[i];
    }
    for (int i = 0; i < 4; i++) output_line(s[i], y[i]);
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            /* adding the bias after the max gives the same floats: rounding is monotone */
            vec top = nan_max(y[2 * a][2 * b], y[2 * a][2 * b + 1]);
            vec bottom = nan_max(y[2 * a + 1][2 * b], y[2 * a + 1][2 * b + 1]);
            best[a * 2 + b] = nan_max(floor, nan_max(top, bottom) + bias);
        }
}
#else
/* u = G g G^T for LANES 3x3 filters g (tap-major: g[tap] holds the tap of each filter),
   G = [[1,0,0],[1/2,1/2,1/2],[1/2,-1/2,1/2],[0,0,1]] */
static inline __attribute__((always_inline)) void filter_transform(const vec g[9], vec u[16]) {
    vec t[4][3];
    for (int j = 0; j < 3; j++) {
        t[0][j] = g[j];
        t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
        t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
        t[3][j] = g[6 + j];
    }
    for (int i = 0; i < 4; i++) {
        u[i * 4 + 0] = t[i][0];
        u[i * 4 + 1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
        u[i * 4 + 2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
        u[i * 4 + 3] = t[i][2];
    }
}

/* V = B^T d B for the 4x4 patch at (i0, j0) of one channel, LANES inputs from v;
   B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]]. The patch of a pool window always lies on
   the map (the pool drops an odd border), so `rows` and `cols` are always 4. */
static inline __attribute__((always_inline)) void input_transform(const float *channel, long width, long n,
                                                                   long i0, long j0, long v, int rows, int cols,
                                                                   vec out[16]) {
    (void)rows, (void)cols;
    vec d[4][4], t[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) d[i][j] = load(channel + ((i0 + i) * width + j0 + j) * n + v);
    for (int j = 0; j < 4; j++) {
        t[0][j] = d[0][j] - d[2][j];
        t[1][j] = d[1][j] + d[2][j];
        t[2][j] = d[2][j] - d[1][j];
        t[3][j] = d[1][j] - d[3][j];
    }
    for (int i = 0; i < 4; i++) {
        out[i * 4 + 0] = t[i][0] - t[i][2];
        out[i * 4 + 1] = t[i][1] + t[i][2];
        out[i * 4 + 2] = t[i][2] - t[i][1];
        out[i * 4 + 3] = t[i][1] - t[i][3];
    }
}

/* the one pooled output max(floor, the four outputs A^T m A + bias), A^T = [[1,1,1,0],[0,1,-1,-1]] */
static inline void pooled_outputs(const vec m[16], vec bias, vec floor, vec best_out[1]) {
    vec s[2][4];
    for (int j = 0; j < 4; j++) {
        s[0][j] = m[j] + m[4 + j] + m[8 + j];
        s[1][j] = m[4 + j] - m[8 + j] - m[12 + j];
    }
    vec best = floor;
    for (int i = 0; i < 2; i++) {
        best = nan_max(best, s[i][0] + s[i][1] + s[i][2] + bias);
        best = nan_max(best, s[i][1] - s[i][2] - s[i][3] + bias);
    }
    best_out[0] = best;
}

#endif

/* Pooled outputs per block side: 1 (F(2x2, 3x3)) or 2 (F(4x4, 3x3)) */
#define WINO_POOLED ((WINO_TILE - 2) / 2)

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

/* u [K][WINO_P][C][O] = G g G^T of every filter g of weight [K][O][C][3][3], LANES output channels
   at a time (the scalar form took 2.4 ms for CNN3's second layer, a sixteenth of a 32-input
   forward), so that each position's writes also run along memory */
static void transform_filters(const float *weight, float *u, long models, long outs, long channels) {
#pragma omp parallel for collapse(2) schedule(static)
    for (long k = 0; k < models; k++)
        for (long c = 0; c < channels; c++)
            for (long o0 = 0; o0 < outs; o0 += LANES) {
                int here = (int)(outs - o0 < LANES ? outs - o0 : LANES);
                float taps[9][LANES] = {{0}}, out[WINO_P][LANES];
                for (int o = 0; o < here; o++)
                    for (int q = 0; q < 9; q++) taps[q][o] = weight[((k * outs + o0 + o) * channels + c) * 9 + q];
                vec g[9], t[WINO_P];
                for (int q = 0; q < 9; q++) g[q] = load(taps[q]);
                filter_transform(g, t);
                for (int p = 0; p < WINO_P; p++) memcpy(out[p], &t[p], sizeof(vec));
                for (int p = 0; p < WINO_P; p++)
                    memcpy(u + ((k * WINO_P + p) * channels + c) * outs + o0, out[p], sizeof(float) * here);
            }
}

/* `filters`: the transformed filters (winograd_filters), or NULL to transform them here */
static void winograd_conv(const float *in, const float *weight, const float *filters, const float *bias, float *out,
                          long models, long channels, long height, long width, long n, long outs, float floor) {
    long out_h = (height - 2) / 2, out_w = (width - 2) / 2; /* pooled: the pool drops an odd border */
    if (out_h <= 0 || out_w <= 0) return;                  /* a 3x3 map pools to nothing */
    /* blocks of WINO_POOLED x WINO_POOLED pooled outputs; the last row and column of blocks may
       reach past the map */
    long tiles_h = (out_h + WINO_POOLED - 1) / WINO_POOLED, tiles = (out_w + WINO_POOLED - 1) / WINO_POOLED;
    const long step = 2 * WINO_POOLED; /* input rows and columns between blocks */
    int ob = block_size(outs, MAX_OB), jb = block_size(tiles, MAX_JB);
    float *own = NULL;
    if (filters == NULL) {
        own = malloc(sizeof(float) * models * WINO_P * channels * outs);
        if (own == NULL) abort();
        transform_filters(weight, own, models, outs, channels);
    }
    const float *u = filters ? filters : own;
    vec floor_v = broadcast(floor);
#pragma omp parallel
    {
        /* this thread's transformed block row of inputs [C][tiles][WINO_P] and products
           [OB][tiles][WINO_P] */
        vec *x = aligned_alloc(sizeof(vec), sizeof(vec) * channels * tiles * WINO_P);
        vec *m = aligned_alloc(sizeof(vec), sizeof(vec) * ob * tiles * WINO_P);
        if (x == NULL || m == NULL) abort();
#pragma omp for collapse(2) schedule(static)
        for (long k = 0; k < models; k++)
            for (long ti = 0; ti < tiles_h; ti++)
                for (long v = 0; v < n; v += LANES) {
                    const float *in_k = in + k * channels * height * width * n;
                    const float *u_k = u + k * WINO_P * channels * outs;
                    long i0 = ti * step;
                    int rows = (int)(height - i0 < WINO_TILE ? height - i0 : WINO_TILE);
                    for (long c = 0; c < channels; c++)
                        for (long tj = 0; tj < tiles; tj++) {
                            long j0 = tj * step;
                            int cols = (int)(width - j0 < WINO_TILE ? width - j0 : WINO_TILE);
                            vec *x_here = x + (c * tiles + tj) * WINO_P;
                            const float *channel = in_k + c * height * width * n;
                            if (rows == WINO_TILE && cols == WINO_TILE) /* the common case, unrolled */
                                input_transform(channel, width, n, i0, j0, v, WINO_TILE, WINO_TILE, x_here);
                            else
                                input_transform(channel, width, n, i0, j0, v, rows, cols, x_here);
                        }
                    for (long o0 = 0; o0 < outs; o0 += ob) {
                        int o_here = (int)(outs - o0 < ob ? outs - o0 : ob);
                        for (long tj0 = 0; tj0 < tiles; tj0 += jb) {
                            int j_here = (int)(tiles - tj0 < jb ? tiles - tj0 : jb);
                            any_winograd_block(u_k, x, m, channels, outs, tiles, o0, tj0, o_here, j_here);
                        }
                        for (int o = 0; o < o_here; o++) {
                            vec b = broadcast(bias ? bias[k * outs + o0 + o] : 0.0f);
                            float *out_o = out + (k * outs + o0 + o) * out_h * out_w * n;
                            for (long tj = 0; tj < tiles; tj++) {
                                vec best[WINO_POOLED * WINO_POOLED];
                                pooled_outputs(m + (o * tiles + tj) * WINO_P, b, floor_v, best);
                                for (long a = 0; a < WINO_POOLED; a++)
                                    for (long e = 0; e < WINO_POOLED; e++) {
                                        long pi = ti * WINO_POOLED + a, pj = tj * WINO_POOLED + e;
                                        if (pi < out_h && pj < out_w)
                                            memcpy(out_o + (pi * out_w + pj) * n + v, &best[a * WINO_POOLED + e],
                                                   sizeof(vec));
                                    }
                            }
                        }
                    }
                }
        free(x);
        free(m);
    }
    free(own);
}
#endif

/* The positions a transformed filter has in this build's Winograd path (16 for F(2x2, 3x3), 36 for
   F(4x4, 3x3)), 0 in a build without one: winograd_filters writes [K][this][C][O]. */
int winograd_positions(void) {
#if WINOGRAD
    return WINO_P;
#else
    return 0;
#endif
}

/* Whether model_conv takes the Winograd path for a layer of these shapes. */
static int winograd_applies(long kh, long kw, long sh, long sw, long dh, long dw, long pool) {
    return WINOGRAD && kh == 3 && kw == 3 && sh == 1 && sw == 1 && dh == 1 && dw == 1 && pool == 2;
}

/* For a layer that takes the Winograd path: its transformed filters u [K][P][C][O] (P =
   winograd_positions()), written, and 1;
   else 0. A forward computes them once per call and hands them to each chunk's model_conv, which
   otherwise transforms the filters on every call. */
int winograd_filters(const float *weight, float *u, long models, long outs, long channels, long kh, long kw,
                     long sh, long sw, long dh, long dw, long pool) {
    if (!winograd_applies(kh, kw, sh, sw, dh, dw, pool)) return 0;
#if WINOGRAD
    transform_filters(weight, u, models, outs, channels);
#else
    (void)weight, (void)u, (void)models, (void)outs, (void)channels;
#endif
    return 1;
}

/* `filters`: winograd_filters of `weight` for this layer, or NULL */
void model_conv(const float *in, const float *weight, const float *filters, const float *bias, float *out,
                long models, long channels, long height, long width, long n, long outs, long kh, long kw, long sh,
                long sw, long dh, long dw, long pool, float floor) {
#if WINOGRAD
    if (winograd_applies(kh, kw, sh, sw, dh, dw, pool)) {
        winograd_conv(in, weight, filters, bias, out, models, channels, height, width, n, outs, floor);
        return;
    }
#endif
    (void)filters;
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
