/* tests/test.h - a minimal test harness: each tests/test_*.c is one binary whose main()
 * calls RUN(test_fn) for each case and returns test_summary(). A case fails when any
 * CHECK inside it fails; every failed CHECK prints file, line and the values involved. */
#ifndef RN_TEST_H
#define RN_TEST_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "platform.h"

static int test_case_failed, test_cases_passed, test_cases_failed, test_cases_skipped;
static const char *test_skip_reason;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            test_case_failed = 1;                                                                  \
            fprintf(stderr, "  %s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);             \
        }                                                                                          \
    } while (0)
#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            test_case_failed = 1;                                                                  \
            fprintf(stderr, "  %s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);             \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)
/* |a - b| <= tol * max(1, |b|) ... absolute below 1, relative above */
#define CHECK_CLOSE(a, b, tol)                                                                     \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        double s_ = fabs(b_) > 1.0 ? fabs(b_) : 1.0;                                               \
        if (!(fabs(a_ - b_) <= (tol)*s_)) {                                                        \
            test_case_failed = 1;                                                                  \
            fprintf(stderr, "  %s:%d: %s = %.9g, expected %s = %.9g (tol %g)\n", __FILE__,         \
                    __LINE__, #a, a_, #b, b_, (double)(tol));                                      \
        }                                                                                          \
    } while (0)
/* a == b in float. C99 lets a float constant carry more precision than float
 * (FLT_EVAL_METHOD 1 on s390x: 1e-3f is the double 0.001 there, which no float equals);
 * the casts round each side to float first. */
#define FLOAT_EQ(a, b) ((float)(a) == (float)(b))
/* Skip the current case (e.g. ../shared missing when allowed); counts as skipped. */
#define SKIP(reason)                                                                               \
    do {                                                                                           \
        test_skip_reason = (reason);                                                               \
        return;                                                                                    \
    } while (0)

#define RUN(fn)                                                                                    \
    do {                                                                                           \
        test_case_failed = 0;                                                                      \
        test_skip_reason = NULL;                                                                   \
        fn();                                                                                      \
        if (test_skip_reason) {                                                                    \
            test_cases_skipped++;                                                                  \
            printf("SKIP %s: %s\n", #fn, test_skip_reason);                                        \
        } else if (test_case_failed) {                                                             \
            test_cases_failed++;                                                                   \
            printf("FAIL %s\n", #fn);                                                              \
        } else {                                                                                   \
            test_cases_passed++;                                                                   \
            printf("ok   %s\n", #fn);                                                              \
        }                                                                                          \
        fflush(stdout);                                                                            \
    } while (0)

static inline int test_summary(void) {
    printf("# %d passed, %d failed, %d skipped\n", test_cases_passed, test_cases_failed,
           test_cases_skipped);
    return test_cases_failed ? 1 : 0;
}

/* Largest |a-b| / max(|b|_inf, floor) over n elements. */
static inline double max_rel_diff(const float *a, const float *b, size_t n, double floor_) {
    double m = floor_, d = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(b[i]) > m) m = fabs(b[i]);
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (e > d) d = e;
    }
    return d / m;
}

/* The ../shared directory (SHARED env var, default ../shared), or NULL when missing. */
static inline const char *test_shared_dir(void) {
    const char *s = getenv("SHARED");
    if (!s || !*s) s = "../shared";
    char p[1024];
    snprintf(p, sizeof p, "%s/data", s);
    RnFileInfo fi; /* fopen cannot open a directory on Windows */
    return rn_file_info(p, &fi) == 0 && fi.kind == RN_FILE_DIR ? s : NULL;
}

/* RN_TEST_EMULATED=1 (tools/cross.sh): the binary runs under qemu or wine, where the
 * ResNet-50-sized cases take many minutes; they run on x86-64 and are left out there. */
static inline int test_emulated(void) {
    const char *e = getenv("RN_TEST_EMULATED");
    return e && strcmp(e, "1") == 0;
}

/* A new directory for a test's files, $TMPDIR (or /tmp)/NAME.PID.N, in out; 0 or -1.
 * (mkdtemp and mkstemp are POSIX only.) */
static inline int test_temp_dir(char *out, size_t n, const char *name) {
    static int serial;
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    snprintf(out, n, "%s/%s.%ld.%d", base, name, rn_pid(), serial++);
    return mkdir_p(out);
}
#endif
