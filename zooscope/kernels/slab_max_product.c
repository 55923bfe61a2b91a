/* The first convolution of a population and the max-pool after it, in one pass.

   out[r, c] = max(floor, max over s of sum over t of weight[r, t] * columns[t, s, c])

   weight  [rows, taps]          every model's filters stacked, bias as the last tap
   columns [taps, slabs, width]  the im2col, pool-ordered: slab s holds offset s of every pool window
   out     [rows, width]         the pooled convolution; floor is -INFINITY, or 0 to fold in a ReLU

   Computed with torch as a matrix product and an amax, the product's slabs (slabs times the
   output) are written to memory and read back; here each output value's slab sums live in
   registers. The max propagates NaN as torch's max-pool does: a diverged model stays NaN.

   Built at run time by zooscope/compiled_kernels.py with the machine's C compiler
   (-O3 -march=native). GCC vector extensions keep it free of intrinsics: the compiler maps a
   16-float vector onto AVX-512, AVX2 or SSE, whatever the machine has. */

#include <string.h>

#define LANES 16 /* floats per vector: one AVX-512 register, one 64-byte cache line */
#define ROWS 8   /* output rows per block: each column vector loaded feeds ROWS multiply-adds */

typedef float vec __attribute__((vector_size(LANES * sizeof(float))));
typedef int vmask __attribute__((vector_size(LANES * sizeof(int))));

static inline vec load(const float *p) {
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline vec broadcast(float value) { return (vec){} + value; }

/* best, or a where a is larger or NaN (a NaN in best stays: nothing compares above it) */
static inline vec nan_max(vec best, vec a) {
    vmask take = (a > best) | (a != a);
    return (vec)(((vmask)a & take) | ((vmask)best & ~take));
}

/* ROWS rows from `row`, one vector of columns read from `columns` (row stride `stride`) */
static inline void block(const float *weight, const float *columns, long stride, long taps, long slabs,
                         long row, float floor, vec best[ROWS]) {
    for (int i = 0; i < ROWS; i++) best[i] = broadcast(floor);
    for (long s = 0; s < slabs; s++) {
        vec acc[ROWS];
        for (int i = 0; i < ROWS; i++) acc[i] = (vec){};
        for (long t = 0; t < taps; t++) {
            vec x = load(columns + (t * slabs + s) * stride);
            for (int i = 0; i < ROWS; i++) acc[i] += weight[(row + i) * taps + t] * x;
        }
        for (int i = 0; i < ROWS; i++) best[i] = nan_max(best[i], acc[i]);
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
    long blocks = rows / ROWS;
#pragma omp parallel for schedule(static)
    for (long b = 0; b < blocks; b++) {
        long r = b * ROWS;
        vec best[ROWS];
        for (long c = 0; c < full; c += LANES) {
            block(weight, columns + c, width, taps, slabs, r, floor, best);
            for (int i = 0; i < ROWS; i++) memcpy(out + (r + i) * width + c, &best[i], sizeof best[i]);
        }
        if (full < width) {
            block(weight, tail, LANES, taps, slabs, r, floor, best);
            for (int i = 0; i < ROWS; i++)
                memcpy(out + (r + i) * width + full, &best[i], sizeof(float) * (width - full));
        }
    }
    for (long r = blocks * ROWS; r < rows; r++) /* fewer than ROWS rows left */
        for (long c = 0; c < width; c++) out[r * width + c] = one_value(weight, columns, taps, slabs, width, r, c, floor);
}
