/* parallel.h - OpenMP behind one macro, so that the OPENMP=0 build compiles the same code:
 * OMP_PRAGMA(x) is _Pragma("x") with OpenMP and nothing (no warnings) without, and the
 * omp_* queries the library makes answer as one thread would. Internal to the library. */
#ifndef RN_PARALLEL_H
#define RN_PARALLEL_H

#ifdef _OPENMP
#include <omp.h>
#define OMP_PRAGMA(x) _Pragma(#x)
#else
#define OMP_PRAGMA(x)
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_thread_num(void) { return 0; }
static inline int omp_get_num_threads(void) { return 1; }
static inline int omp_in_parallel(void) { return 0; }
#endif

#endif /* RN_PARALLEL_H */
