/* Winograd transforms for a 3x3 convolution (stride 1, no dilation) followed by a 2x2 max-pool,
   for the kernels that take such layers on this path (model_conv.c, slab_max_product.c), and the
   functions each such kernel's library exports about them (winograd_positions, winograd_filters).
   Included after vector.h; compiled in only with WINOGRAD=1 or 2 (builds of
   compiled_kernels.BUILD_VARIANTS).
   WINOGRAD=1, F(2x2, 3x3): each 2x2 block of outputs, exactly one pool window, is
   A^T [(G g G^T) . (B^T d B)] A over the 4x4 input patch d under it: 16 multiplies per input and
   output channel where the direct sum takes 36.
   WINOGRAD=2, F(4x4, 3x3): each 4x4 block of outputs, four pool windows, comes from the 6x6 patch
   under it: 36 multiplies per channel pair for 16 outputs, 1.8x fewer than F(2x2, 3x3), with
   larger transforms (amortised over the other side's channels) and larger rounding errors (the
   interpolation points 0, +-1, +-2 scale terms by up to 8; float32 stays within the parity tests'
   tolerance). A block past the map's edge reads zeros there and writes only the pooled outputs
   that exist.
   A NaN filter makes its whole map NaN, as in the direct sum. A NaN input reaches every output of
   each block whose patch holds it: on F(2x2, 3x3) that is the pool window that sees it, as in the
   direct sum; on F(4x4, 3x3) it can be all four windows of the block where the direct sum reaches
   one or two (that input's logits are NaN either way). An infinite input can give NaN where the
   direct sum gives an infinity (inf - inf in the transform). */

#ifndef ZOOSCOPE_WINOGRAD_H
#define ZOOSCOPE_WINOGRAD_H

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
    /* products with the reciprocals rather than divisions (the compiler keeps a division as one) */
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
#define WINO_STEP (2 * WINO_POOLED) /* input rows and columns from one block's patch to the next */

/* V of the block whose patch starts at (i0, j0) of one channel of a height x width map, LANES
   inputs from v: of the patch only what lies on the map is read, the rest counts as zeros */
static inline __attribute__((always_inline)) void block_input_transform(const float *channel, long height,
                                                                         long width, long n, long i0, long j0,
                                                                         long v, vec out[WINO_P]) {
    int rows = (int)(height - i0 < WINO_TILE ? height - i0 : WINO_TILE);
    int cols = (int)(width - j0 < WINO_TILE ? width - j0 : WINO_TILE);
    if (rows == WINO_TILE && cols == WINO_TILE) /* the common case, unrolled */
        input_transform(channel, width, n, i0, j0, v, WINO_TILE, WINO_TILE, out);
    else
        input_transform(channel, width, n, i0, j0, v, rows, cols, out);
}

/* The pooled outputs `best` of block (ti, tj) into one map [out_h][out_w][n], LANES inputs from
   v; those of a block past the map's edge that do not exist are dropped */
static inline __attribute__((always_inline)) void store_pooled(float *map, const vec best[WINO_POOLED * WINO_POOLED],
                                                                long ti, long tj, long out_h, long out_w, long n,
                                                                long v) {
    for (long a = 0; a < WINO_POOLED; a++)
        for (long e = 0; e < WINO_POOLED; e++) {
            long pi = ti * WINO_POOLED + a, pj = tj * WINO_POOLED + e;
            if (pi < out_h && pj < out_w)
                memcpy(map + (pi * out_w + pj) * n + v, &best[a * WINO_POOLED + e], sizeof(vec));
        }
}

/* u [WINO_P][C][O] = G g G^T of one model's filters g, weight [O][C][3][3], LANES output channels
   at a time, so that each position's writes also run along memory */
static void transform_model_filters(const float *weight, float *u, long outs, long channels) {
    for (long c = 0; c < channels; c++)
        for (long o0 = 0; o0 < outs; o0 += LANES) {
            int here = (int)(outs - o0 < LANES ? outs - o0 : LANES);
            float taps[9][LANES] = {{0}}, out[WINO_P][LANES];
            for (int o = 0; o < here; o++)
                for (int q = 0; q < 9; q++) taps[q][o] = weight[((o0 + o) * channels + c) * 9 + q];
            vec g[9], t[WINO_P];
            for (int q = 0; q < 9; q++) g[q] = load(taps[q]);
            filter_transform(g, t);
            for (int p = 0; p < WINO_P; p++) memcpy(out[p], &t[p], sizeof(vec));
            for (int p = 0; p < WINO_P; p++) memcpy(u + (p * channels + c) * outs + o0, out[p], sizeof(float) * here);
        }
}

/* u [K][WINO_P][C][O] for every model of weight [K][O][C][3][3] */
static void transform_filters(const float *weight, float *u, long models, long outs, long channels) {
#pragma omp parallel for schedule(static)
    for (long k = 0; k < models; k++)
        transform_model_filters(weight + k * outs * channels * 9, u + k * WINO_P * channels * outs, outs, channels);
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

/* Whether a kernel of this build takes the Winograd path for a layer of these shapes. */
int winograd_applies(long kh, long kw, long sh, long sw, long dh, long dw, long pool) {
    return WINOGRAD && kh == 3 && kw == 3 && sh == 1 && sw == 1 && dh == 1 && dw == 1 && pool == 2;
}

/* For a layer that takes the Winograd path: its transformed filters u [K][P][C][O] (P =
   winograd_positions()), written, and 1; else 0. A forward computes them once per call and hands
   them to each chunk's shared_winograd_conv (model_conv transforms each model's filters itself). */
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

#endif
