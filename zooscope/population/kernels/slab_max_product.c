/* The first convolution of a population and the max-pool after it, in one pass.

   out[r, c] = max(floor, max over s of sum over t of weight[r, t] * columns[t, s, c])

   weight  [rows, taps]          every model's filters stacked, bias as the last tap
   columns [taps, slabs, width]  the im2col, pool-ordered: slab s holds offset s of every pool window
   out     [rows, width]         the pooled convolution; floor is -INFINITY, or 0 to fold in a ReLU

   Computed with torch as a matrix product and an amax, the product's slabs (slabs times the
   output) are written to memory and read back; here each output value's slab sums live in
   registers. The max propagates NaN as torch's max-pool does: a diverged model stays NaN.
   A build with WINOGRAD=1 or 2 also has shared_winograd_conv (at the end), which runs a 3x3
   first layer with a 2x2 pool from the image on a Winograd path instead.

   Built at run time by zooscope/population/compiled_kernels.py with the machine's C compiler
   (-O3 -march=native -fopenmp); vector.h has the vector type. */

#include "vector.h"
#include "winograd.h"

/* A block of output is ROWS rows by up to COLS vectors of columns: each column vector loaded feeds
   ROWS multiply-adds and each weight COLS. The columns are walked in tiles of COL_TILE blocks, and
   every block of rows passes over a tile before the next: the tile (taps x slabs x COL_TILE x COLS
   vectors, 53 KB for CNN-s at 8 floats) stays in L1/L2 while all the weights (about 100 KB) stream
   past, where walking all columns for each block of rows streamed the whole im2col (about 1 MB for
   CNN-s) from the last-level cache once per block. On an AVX2 EPYC with 512 KB of L2 a core the
   tiles took CNN-s's first layer from 27.8 to 32.9 GFLOP/s and cnn_digits' from 19.4 to 31.4. The
   shapes are chosen with benchmarks/probe_kernels.py (docs/benchmarks.md, "With column tiles");
   compiled_kernels.build can override them. The program builds ROWS x COLS in each shape of
   compiled_kernels.BUILD_VARIANTS and keeps the fastest here (compiled_kernels.kernel_variant):
   on a Zen 4 EPYC 8 x 1 ran the first layers 1.6-1.8x as fast as the default 4 x 2. */
#ifndef ROWS
#define ROWS 4
#endif
#ifndef COLS
#define COLS 2
#endif
#ifndef COL_TILE
#define COL_TILE 8
#endif

/* ROWS rows from `row` by `cols` (a constant at every call site) vectors of columns read from
   `columns` (row stride `stride`) */
static inline __attribute__((always_inline)) void block(const float *weight, const float *columns, long stride,
                                                        long taps, long slabs, long row, float floor,
                                                        vec best[ROWS][COLS], const int cols) {
    for (int i = 0; i < ROWS; i++)
        for (int c = 0; c < cols; c++) best[i][c] = broadcast(floor);
    for (long s = 0; s < slabs; s++) {
        vec acc[ROWS][COLS];
        for (int i = 0; i < ROWS; i++)
            for (int c = 0; c < cols; c++) acc[i][c] = (vec){};
        for (long t = 0; t < taps; t++) {
            vec x[COLS];
            for (int c = 0; c < cols; c++) x[c] = load(columns + (t * slabs + s) * stride + c * LANES);
            for (int i = 0; i < ROWS; i++) {
                float w = weight[(row + i) * taps + t];
                for (int c = 0; c < cols; c++) acc[i][c] += w * x[c];
            }
        }
        for (int i = 0; i < ROWS; i++)
            for (int c = 0; c < cols; c++) best[i][c] = nan_max(best[i][c], acc[i][c]);
    }
}

static float one_value(const float *weight, const float *columns, long taps, long slabs, long width,
                       long r, long c, float floor) {
    float best = floor;
    for (long s = 0; s < slabs; s++) {
        float acc = 0.0f;
        for (long t = 0; t < taps; t++) acc += weight[r * taps + t] * columns[(t * slabs + s) * width + c];
        if (acc > best || acc != acc) best = acc;
    }
    return best;
}

/* The whole of out, the blocks of rows shared between OpenMP threads. Built with -fopenmp, this
   library needs libgomp.so.1, and torch (imported first) has loaded its own copy under that
   name: the kernel runs on torch's thread pool rather than competing with it for the cores.
   `tail` is scratch of taps * slabs * LANES floats for the last, partial vector of columns. */
void slab_max_product(const float *weight, const float *columns, float *out, long rows, long taps,
                      long slabs, long width, float floor, float *tail) {
    long full = width - width % LANES;
    if (full < width) { /* the last columns, zero-padded to a whole vector */
        memset(tail, 0, sizeof(float) * taps * slabs * LANES);
        for (long ts = 0; ts < taps * slabs; ts++)
            memcpy(tail + ts * LANES, columns + ts * width + full, sizeof(float) * (width - full));
    }
    long blocks = rows / ROWS, paired = full - full % (COLS * LANES);
    long tile = (long)COL_TILE * COLS * LANES, tiles = (paired + tile - 1) / tile;
    /* tile-major: each thread takes whole column tiles, and every block of rows passes over a
       tile while it is in cache */
#pragma omp parallel for collapse(2) schedule(static)
    for (long t = 0; t < tiles; t++)
        for (long b = 0; b < blocks; b++) {
            long r = b * ROWS, end = (t + 1) * tile < paired ? (t + 1) * tile : paired;
            vec best[ROWS][COLS];
            for (long c = t * tile; c < end; c += COLS * LANES) {
                block(weight, columns + c, width, taps, slabs, r, floor, best, COLS);
                for (int i = 0; i < ROWS; i++) memcpy(out + (r + i) * width + c, best[i], sizeof best[i]);
            }
        }
#pragma omp parallel for schedule(static)
    for (long b = 0; b < blocks; b++) {
        long r = b * ROWS;
        vec best[ROWS][COLS];
        for (long c = paired; c < full; c += LANES) {
            block(weight, columns + c, width, taps, slabs, r, floor, best, 1);
            for (int i = 0; i < ROWS; i++) memcpy(out + (r + i) * width + c, &best[i][0], sizeof(vec));
        }
        if (full < width) {
            block(weight, tail, LANES, taps, slabs, r, floor, best, 1);
            for (int i = 0; i < ROWS; i++)
                memcpy(out + (r + i) * width + full, &best[i][0], sizeof(float) * (width - full));
        }
    }
    for (long r = blocks * ROWS; r < rows; r++) /* fewer than ROWS rows left */
        for (long c = 0; c < width; c++) out[r * width + c] = one_value(weight, columns, taps, slabs, width, r, c, floor);
}

#if WINOGRAD
/* Filters in a group (the group passes over every block, its transformed filters in L1) and
   filters at once (each transformed input loaded feeds SHARED_ROWS multiply-adds). On a Zen 4 EPYC,
   CNN3's first layer at 16 inputs, one thread (benchmarks/probe_kernels.py): 8 at once in groups
   of 16 took 11.1 ms, 4 at once 12.4 ms, 2 at once 15.5 ms, groups of 64 11.8 ms, where the im2col
   product takes 16.1 ms. */
#ifndef SHARED_GROUP
#define SHARED_GROUP 16
#endif
#ifndef SHARED_ROWS
#define SHARED_ROWS 8
#endif

/* m[i][p] = sum over c of u[k][p][c][o] * x[c][p] for the R filters r + i (k = (r + i) / outs,
   o = (r + i) % outs); R and, on the fast path, channels are constants at the call site */
static inline __attribute__((always_inline)) void filter_products(const float *filters, const vec *x, vec m[][WINO_P],
                                                                   long r, long outs, long channels, const int R) {
    const float *u[SHARED_ROWS];
    for (int i = 0; i < R; i++) u[i] = filters + (r + i) / outs * WINO_P * channels * outs + (r + i) % outs;
    for (int p = 0; p < WINO_P; p++) {
        vec acc[SHARED_ROWS];
        for (int i = 0; i < R; i++) acc[i] = (vec){};
        for (long c = 0; c < channels; c++) {
            vec xs = x[c * WINO_P + p];
            for (int i = 0; i < R; i++) acc[i] += u[i][(p * channels + c) * outs] * xs;
        }
        for (int i = 0; i < R; i++) m[i][p] = acc[i];
    }
}

/* The same layer (a 3x3 convolution, stride 1, with the 2x2 max-pool after it) on the Winograd
   path, from the image rather than its im2col, where the layer is the first and its input the
   one every model sees:

   out[k, o, pi, pj, :] = max(floor, max over the pool window of (bias[k, o] + the convolution of
                          in with model k's filter o))

   in      [C, H, W, n]        the shared input chunk, n a multiple of LANES
   filters [K, P, C, O]        winograd_filters of the weight [K, O, C, 3, 3]
   bias    [K, O], or NULL
   out     [K, O, Ho, Wo, n]   the pooled map, Ho = (H - 2) / 2, Wo = (W - 2) / 2

   The input transform of each block is made once for all K * O filters (the im2col path
   multiplies every filter with every tap); each filter then takes P multiplies per input channel
   and block: for CNN3's first layer (3 channels) F(4x4, 3x3) does 108 multiply-adds and about 150
   other operations per row and block of four pooled outputs, where the product does 448. */
void shared_winograd_conv(const float *in, const float *filters, const float *bias, float *out, long models,
                          long channels, long height, long width, long n, long outs, float floor) {
    long out_h = (height - 2) / 2, out_w = (width - 2) / 2;
    if (out_h <= 0 || out_w <= 0) return;
    long tiles_h = (out_h + WINO_POOLED - 1) / WINO_POOLED, tiles_w = (out_w + WINO_POOLED - 1) / WINO_POOLED;
    long blocks = tiles_h * tiles_w, vectors = n / LANES;
    /* x [blocks][vectors][C][P]: every block's transformed input, shared by all rows */
    vec *x = aligned_alloc(sizeof(vec), sizeof(vec) * blocks * vectors * channels * WINO_P);
    if (x == NULL) abort();
#pragma omp parallel for collapse(2) schedule(static)
    for (long b = 0; b < blocks; b++)
        for (long vi = 0; vi < vectors; vi++) {
            for (long c = 0; c < channels; c++)
                block_input_transform(in + c * height * width * n, height, width, n, b / tiles_w * WINO_STEP,
                                      b % tiles_w * WINO_STEP, vi * LANES,
                                      x + ((b * vectors + vi) * channels + c) * WINO_P);
        }
    vec floor_v = broadcast(floor);
    long filters_total = models * outs, groups = (filters_total + SHARED_GROUP - 1) / SHARED_GROUP;
    /* a group of filters passes over every block: its transformed filters stay in L1 while the
       blocks stream from L2 */
#pragma omp parallel for schedule(static)
    for (long g = 0; g < groups; g++)
        for (long b = 0; b < blocks; b++)
            for (long vi = 0; vi < vectors; vi++) {
                const vec *x_here = x + (b * vectors + vi) * channels * WINO_P;
                long end = (g + 1) * SHARED_GROUP < filters_total ? (g + 1) * SHARED_GROUP : filters_total;
                for (long r = g * SHARED_GROUP; r < end; r += SHARED_ROWS) {
                    int here = (int)(end - r < SHARED_ROWS ? end - r : SHARED_ROWS);
                    vec m[SHARED_ROWS][WINO_P];
                    if (channels == 3 && here == SHARED_ROWS) /* an image's channels: unrolled */
                        filter_products(filters, x_here, m, r, outs, 3, SHARED_ROWS);
                    else
                        for (int i = 0; i < here; i++)
                            filter_products(filters, x_here, m + i, r + i, outs, channels, 1);
                    for (int i = 0; i < here; i++) {
                        vec best[WINO_POOLED * WINO_POOLED];
                        pooled_outputs(m[i], broadcast(bias ? bias[r + i] : 0.0f), floor_v, best);
                        store_pooled(out + (r + i) * out_h * out_w * n, best, b / tiles_w, b % tiles_w, out_h, out_w,
                                     n, vi * LANES);
                    }
                }
            }
    free(x);
}
#endif
