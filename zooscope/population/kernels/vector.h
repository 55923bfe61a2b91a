/* What the population kernels share: a vector of LANES floats in GCC's vector extensions (the
   compiler maps it onto AVX-512, AVX2, SSE or NEON, whatever -march=native finds) and a
   NaN-propagating max.

   compiled_kernels.py sets LANES from the CPU at build time: 16 floats (one AVX-512 register) with
   AVX-512, 8 otherwise (one AVX2 register). Built for 16 on an AVX2 CPU, every vector is a pair of
   registers and GCC's code for them ran the kernels 30 to 80 times slower than at 8
   (docs/benchmarks.md). */

#ifndef ZOOSCOPE_VECTOR_H
#define ZOOSCOPE_VECTOR_H

#include <string.h>

#ifndef LANES
#define LANES 16 /* floats per vector: one AVX-512 register, one 64-byte cache line */
#endif

typedef float vec __attribute__((vector_size(LANES * sizeof(float))));
typedef int vmask __attribute__((vector_size(LANES * sizeof(int))));

static inline vec load(const float *p) {
    vec v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline vec broadcast(float value) { return (vec){} + value; }

/* best, or a where a is larger or NaN (a NaN in best stays: nothing compares above it), so that
   a max-pool propagates NaN as torch's does and a diverged model stays NaN */
static inline vec nan_max(vec best, vec a) {
    vmask take = (a > best) | (a != a);
    return (vec)(((vmask)a & take) | ((vmask)best & ~take));
}

#endif
