/* A convolution of K models at once, on the per-model layout of the population program.

   out[k, o, i, j, :] = bias[k, o] + sum over c, di, dj of
                        weight[k, o, c, di, dj] * in[k, c, i*sh + di*dh, j*sw + dj*dw, :]

   in     [K, C, H, W, n]    each model's activation, inputs innermost
   weight [K, O, C, kh, kw]  bias [K, O], or NULL
   out    [K, O, Ho, Wo, n]  n a multiple of LANES (the program pads its inputs to one)

   Each model's filters differ, so a product over all models would be a grouped convolution; with
   8 channels a model, oneDNN's grouped kernel ran CNN-s's 5x5 layer at about 35 GFLOP/s. Here the
   vectors run along the inputs, which every model sees alike: a tile of up to 4 output channels
   by 4 output columns by 16 inputs stays in registers while the taps stream past, each loaded
   vector feeding up to 4 multiply-adds.

   Built at run time by zooscope/compiled_kernels.py (-O3 -march=native -fopenmp), see
   slab_max_product.c for the vector type and the thread pool it shares with torch. */

#include <string.h>

#define LANES 16
#define MAX_TILE 4

typedef float vec __attribute__((vector_size(LANES * sizeof(float))));

struct shape {
    long channels, height, width, n, outs, kh, kw, sh, sw, dh, dw, out_h, out_w;
};

static inline vec load(const float *p) {
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Output channels [o0, o0 + OB) x columns [j0, j0 + JB) of row i, inputs [v, v + LANES), one model.
   OB and JB are constants at every call site, so the tile's loops unroll into registers. */
static inline __attribute__((always_inline)) void tile(const float *in, const float *weight, const float *bias,
                                                       float *out, const struct shape *s, long o0, long i, long j0,
                                                       long v, const int OB, const int JB) {
    vec acc[MAX_TILE][MAX_TILE];
    for (int o = 0; o < OB; o++)
        for (int j = 0; j < JB; j++) acc[o][j] = (vec){} + (bias ? bias[o0 + o] : 0.0f);
    const long filter = s->channels * s->kh * s->kw; /* one output channel's weights */
    for (long c = 0; c < s->channels; c++)
        for (long di = 0; di < s->kh; di++) {
            const float *row = in + ((c * s->height + i * s->sh + di * s->dh) * s->width) * s->n + v;
            const float *taps = weight + o0 * filter + (c * s->kh + di) * s->kw;
            for (long dj = 0; dj < s->kw; dj++) {
                vec x[MAX_TILE];
                for (int j = 0; j < JB; j++) x[j] = load(row + ((j0 + j) * s->sw + dj * s->dw) * s->n);
                for (int o = 0; o < OB; o++) {
                    float w = taps[o * filter + dj];
                    for (int j = 0; j < JB; j++) acc[o][j] += w * x[j];
                }
            }
        }
    for (int o = 0; o < OB; o++)
        for (int j = 0; j < JB; j++)
            memcpy(out + (((o0 + o) * s->out_h + i) * s->out_w + j0 + j) * s->n + v, &acc[o][j], sizeof(vec));
}

#define TILE_CASE(OB, JB) \
    case (OB) * 8 + (JB): tile(in, weight, bias, out, s, o0, i, j0, v, OB, JB); break;
#define TILE_ROW(OB) TILE_CASE(OB, 1) TILE_CASE(OB, 2) TILE_CASE(OB, 3) TILE_CASE(OB, 4)

static void any_tile(const float *in, const float *weight, const float *bias, float *out, const struct shape *s,
                     long o0, long i, long j0, long v, int ob, int jb) {
    switch (ob * 8 + jb) {
        TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4)
    }
}

/* Blocks of at most MAX_TILE, as even as possible: 6 channels are 3 + 3, not 4 + 2. */
static int block_size(long total) {
    long blocks = (total + MAX_TILE - 1) / MAX_TILE;
    return (int)((total + blocks - 1) / blocks);
}

void model_conv(const float *in, const float *weight, const float *bias, float *out, long models, long channels,
                long height, long width, long n, long outs, long kh, long kw, long sh, long sw, long dh, long dw) {
    struct shape s = {channels, height, width, n, outs, kh, kw, sh, sw, dh, dw,
                      (height - dh * (kh - 1) - 1) / sh + 1, (width - dw * (kw - 1) - 1) / sw + 1};
    int ob = block_size(outs), jb = block_size(s.out_w);
#pragma omp parallel for collapse(2) schedule(static)
    for (long k = 0; k < models; k++)
        for (long i = 0; i < s.out_h; i++) {
            const float *in_k = in + k * channels * height * width * n;
            const float *weight_k = weight + k * outs * channels * kh * kw;
            const float *bias_k = bias ? bias + k * outs : NULL;
            float *out_k = out + k * outs * s.out_h * s.out_w * n;
            for (long o0 = 0; o0 < outs; o0 += ob)
                for (long j0 = 0; j0 < s.out_w; j0 += jb)
                    for (long v = 0; v < n; v += LANES) {
                        int o_here = (int)(outs - o0 < ob ? outs - o0 : ob);
                        int j_here = (int)(s.out_w - j0 < jb ? s.out_w - j0 : jb);
                        any_tile(in_k, weight_k, bias_k, out_k, &s, o0, i, j0, v, o_here, j_here);
                    }
        }
}
