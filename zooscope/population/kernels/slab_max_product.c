/* The first convolution of a population and the max-pool after it, in one pass.

   out[r, c] = max(floor, max over s of sum over t of weight[r, t] * columns[t, s, c])

   weight  [rows, taps]          every model's filters stacked, bias as the last tap
   columns [taps, slabs, width]  the im2col, pool-ordered: slab s holds offset s of every pool window
   out     [rows, width]         the pooled convolution; floor is -INFINITY, or 0 to fold in a ReLU

   Computed with torch as a matrix product and an amax, the product's slabs (slabs times the
   output) are written to memory and read back; here each output value's slab sums live in
   registers. The max propagates NaN as torch's max-pool does: a diverged model stays NaN.

   Built at run time by zooscope/population/compiled_kernels.py with the machine's C compiler
   (-O3 -march=native -fopenmp); vector.h has the vector type. */

#include "vector.h"

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
