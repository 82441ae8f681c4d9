/* util.c - errors, allocation, random numbers, files, buffers, scratch memory, progress. */
#include "resnet.h"
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ---------------------------------------------------------------- errors, allocation */

/* One message per thread: data loading reports errors from worker threads. */
#if defined(__GNUC__) || defined(__clang__)
static __thread char rn_errbuf[1024];
#else
static char rn_errbuf[1024];
#endif

void rn_set_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rn_errbuf, sizeof rn_errbuf, fmt, ap);
    va_end(ap);
}

const char *rn_error(void) { return rn_errbuf[0] ? rn_errbuf : "unknown error"; }

static void out_of_memory(size_t bytes) {
    fprintf(stderr, "fatal: out of memory allocating %zu bytes (%.1f MiB)\n", bytes,
            bytes / 1048576.0);
    exit(2);
}

void *rn_alloc(size_t bytes) {
    if (bytes == 0) bytes = 64;
    if (bytes > SIZE_MAX - 63) out_of_memory(bytes);
    void *p = rn_aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!p) out_of_memory(bytes);
    return p;
}

void *rn_calloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) out_of_memory(SIZE_MAX);
    void *p = rn_alloc(count * size);
    memset(p, 0, count * size);
    return p;
}

void *rn_calloc_lazy(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) out_of_memory(SIZE_MAX);
    size_t bytes = count * size;
    if (bytes < ((size_t)1 << 20)) return rn_calloc(count, size);
    void *p = rn_zeroed_alloc(bytes);
    if (!p) out_of_memory(bytes);
    return p;
}

void *rn_realloc(void *p, size_t bytes) {
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) out_of_memory(bytes);
    return q;
}

void rn_free(void *p) { free(p); }

char *rn_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (!d) out_of_memory(n);
    memcpy(d, s, n);
    return d;
}

/* ---------------------------------------------------------------- random numbers */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rng_seed(Rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_next(Rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float rng_uniform(Rng *r) { return (float)(rng_next(r) >> 40) * (1.0f / 16777216.0f); }

float rng_normal(Rng *r) {
    /* Box-Muller in double; u1 in (0, 1] so log() is finite. */
    double u1 = ((rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint32_t rng_below(Rng *r, uint32_t n) {
    /* Lemire's multiply-shift with rejection: exactly uniform. */
    uint64_t m = (uint64_t)(uint32_t)(rng_next(r) >> 32) * n;
    uint32_t low = (uint32_t)m;
    if (low < n) {
        uint32_t threshold = (uint32_t)(-n) % n;
        while (low < threshold) {
            m = (uint64_t)(uint32_t)(rng_next(r) >> 32) * n;
            low = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void rng_shuffle(Rng *r, int *a, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(r, (uint32_t)(i + 1));
        int t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* lowbias32 (Chris Wellons' integer hash): a bijection on 32-bit integers. */
uint32_t hash_u32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

float hash_uniform(uint32_t seed, uint32_t index) {
    uint32_t h = hash_u32(index ^ hash_u32(seed));
    return (float)(h >> 8) * (1.0f / 16777216.0f);
}

void hash_fill(float *x, size_t n, uint32_t seed, float bound) {
    uint32_t hs = hash_u32(seed);
    for (size_t i = 0; i < n; i++) {
        uint32_t h = hash_u32((uint32_t)i ^ hs);
        float u = (float)(h >> 8) * (1.0f / 16777216.0f);
        x[i] = (2.0f * u - 1.0f) * bound;
    }
}

/* ---------------------------------------------------------------- time, threads, memory */

int rn_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---------------------------------------------------------------- byte order */

int rn_host_little_endian(void) {
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
    return __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
#else
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
#endif
}

/* Host order and little-endian differ by reversing each value's bytes (or not at all), so
 * storing and loading are the same map; two names say which way the bytes go. */
static void le_map(void *dst, const void *src, size_t count, size_t size) {
    if (rn_host_little_endian() || size == 1) {
        if (dst != src && count) memmove(dst, src, count * size);
        return;
    }
    if (dst != src && count) memmove(dst, src, count * size);
    uint8_t *d = dst;
    for (size_t i = 0; i < count; i++, d += size)
        for (size_t k = 0; k < size / 2; k++) {
            uint8_t t = d[k];
            d[k] = d[size - 1 - k];
            d[size - 1 - k] = t;
        }
}

void rn_le_store(void *dst, const void *src, size_t count, size_t size) {
    le_map(dst, src, count, size);
}

void rn_le_load(void *dst, const void *src, size_t count, size_t size) {
    le_map(dst, src, count, size);
}

float rn_fmaf(float a, float b, float c) {
    double product = (double)a * (double)b; /* exact: 24 + 24 significant bits */
    double sum = product + (double)c;
    if (!isfinite(sum)) return (float)sum;
    /* TwoSum: err is exactly (product + c) - sum */
    double c_part = sum - product;
    double err = (product - (sum - c_part)) + ((double)c - c_part);
    uint64_t bits;
    memcpy(&bits, &sum, sizeof bits);
    if (err != 0.0 && (bits & 1) == 0) { /* inexact, even: step to the odd neighbour */
        bits += (err > 0.0) == (sum > 0.0) ? 1 : (uint64_t)-1;
        memcpy(&sum, &bits, sizeof sum);
    }
    return (float)sum;
}

/* ---------------------------------------------------------------- files */

int write_file_atomic(const char *path, const void *data, size_t len) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, rn_pid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | RN_O_BINARY, 0644);
    if (fd < 0) {
        rn_set_error("%s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            rn_set_error("%s: write failed: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        p += w;
        left -= (size_t)w;
    }
    if (rn_fsync(fd) != 0) {
        rn_set_error("%s: fsync failed: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        return -1;
    }
    if (close(fd) != 0 || rn_replace_file(tmp, path) != 0) {
        rn_set_error("%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        rn_set_error("%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        rn_set_error("%s: not a regular file", path);
        fclose(f);
        return NULL;
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n + 1);
    if (!buf) {
        rn_set_error("%s: cannot allocate %zu bytes to read it", path, n);
        fclose(f);
        return NULL;
    }
    if (fread(buf, 1, n, f) != n) {
        rn_set_error("%s: short read", path);
        free(buf);
        fclose(f);
        return NULL;
    }
    buf[n] = 0;
    fclose(f);
    *len = n;
    return buf;
}

int write_npy_f32(const char *path, const float *data, int ndim, const int64_t *shape) {
    /* NPY 1.0: magic, version, uint16 header length, ASCII dict padded so that the data
     * starts at a multiple of 64 bytes, terminated by '\n'. */
    char dict[256];
    int off = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        off += snprintf(dict + off, sizeof dict - off, "%lld%s", (long long)shape[i],
                        ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
        count *= (size_t)shape[i];
    }
    off += snprintf(dict + off, sizeof dict - off, "), }");
    size_t header = 10 + (size_t)off + 1;
    size_t padded = (header + 63) / 64 * 64;
    Buf b = {0};
    buf_put(&b, "\x93NUMPY\x01\x00", 8);
    uint16_t hl = (uint16_t)(padded - 10);
    uint8_t hlb[2];
    rn_le_store(hlb, &hl, 1, 2);
    buf_put(&b, hlb, 2);
    buf_put(&b, dict, (size_t)off);
    for (size_t i = header; i < padded; i++) buf_put(&b, " ", 1);
    buf_put(&b, "\n", 1);
    size_t at = b.len;
    if (count) buf_put(&b, data, count * sizeof(float));
    rn_le_store(b.data + at, b.data + at, count, sizeof(float)); /* '<f4' on any host */
    int rc = write_file_atomic(path, b.data, b.len);
    buf_free(&b);
    return rc;
}

int mkdir_p(const char *path) {
    char tmp[1024];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof tmp) {
        rn_set_error("bad directory path '%s'", path);
        return -1;
    }
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == 0) {
            char c = tmp[i];
            tmp[i] = 0;
            if (rn_mkdir(tmp) != 0 && errno != EEXIST) {
                rn_set_error("%s: cannot create directory: %s", tmp, strerror(errno));
                return -1;
            }
            tmp[i] = c;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- growing buffer */

void buf_put(Buf *b, const void *data, size_t n) {
    if (n == 0 && b->data) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) out_of_memory(cap);
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = 0;
}

void buf_printf(Buf *b, const char *fmt, ...) {
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) {
        buf_put(b, small, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) out_of_memory((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    buf_put(b, big, (size_t)n);
    free(big);
}

/* Strict UTF-8: no overlongs, no surrogates, nothing above U+10FFFF. */
size_t utf8_valid_len(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int n;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) {
            n = 1;
            cp = c & 0x1f;
            min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            cp = c & 0x0f;
            min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else
            return i;
        if (len - i <= (size_t)n) return i;
        for (int k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += (size_t)n + 1;
    }
    return len;
}

/* Bytes that are not UTF-8 (a file name in Latin-1) become U+FFFD, so that the output is
 * always valid JSON text that every reader accepts. */
void buf_json_string(Buf *b, const char *s) {
    buf_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p >= 0x80) {
            size_t n = *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : 2, ok = 1;
            while (ok < n && p[ok]) ok++;
            if (ok == n && utf8_valid_len(p, n) == n) {
                buf_put(b, p, n);
                p += n - 1;
            } else {
                buf_put(b, "\xef\xbf\xbd", 3);
            }
            continue;
        }
        switch (*p) {
        case '"': buf_put(b, "\\\"", 2); break;
        case '\\': buf_put(b, "\\\\", 2); break;
        case '\n': buf_put(b, "\\n", 2); break;
        case '\r': buf_put(b, "\\r", 2); break;
        case '\t': buf_put(b, "\\t", 2); break;
        default:
            if (*p < 0x20)
                buf_printf(b, "\\u%04x", *p);
            else
                buf_put(b, p, 1);
        }
    }
    buf_put(b, "\"", 1);
}

void buf_free(Buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---------------------------------------------------------------- scratch memory */

static float *scratch_ptr[RN_MAX_THREADS];
static size_t scratch_cap[RN_MAX_THREADS];

float *rn_scratch(int slot, size_t floats) {
    if (slot < 0 || slot >= RN_MAX_THREADS) {
        fprintf(stderr, "fatal: scratch slot %d out of range\n", slot);
        exit(2);
    }
    if (floats > scratch_cap[slot]) {
        rn_free(scratch_ptr[slot]);
        scratch_ptr[slot] = rn_alloc(floats * sizeof(float));
        scratch_cap[slot] = floats;
    }
    return scratch_ptr[slot];
}

/* ---------------------------------------------------------------- progress */

void progress_start(Progress *p, const char *label, long total) {
    p->label = label;
    p->total = total;
    p->done = 0;
    p->t0 = p->last = rn_seconds();
    p->tty = rn_isatty(2);
}

static void progress_draw(Progress *p, const char *extra, int final) {
    double el = rn_seconds() - p->t0;
    double rate = el > 0 ? p->done / el : 0;
    double eta = rate > 0 && p->total > p->done ? (p->total - p->done) / rate : 0;
    if (p->tty) {
        int width = 24, fill = p->total > 0 ? (int)(width * p->done / p->total) : width;
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r%-14s [%s] %ld/%ld  %.1f/s  %s %.0fs%s%s\033[K", p->label, bar,
                p->done, p->total, rate, final ? "took" : "eta", final ? el : eta,
                extra ? "  " : "", extra ? extra : "");
        if (final) fputc('\n', stderr);
    } else {
        fprintf(stderr, "%s: %ld/%ld  %.1f/s  %s %.0fs%s%s\n", p->label, p->done, p->total, rate,
                final ? "took" : "eta", final ? el : eta, extra ? "  " : "", extra ? extra : "");
    }
    fflush(stderr);
}

void progress_update(Progress *p, long done, const char *extra) {
    p->done = done;
    double t = rn_seconds();
    /* terminal: redraw up to 10 times a second; plain output: a line every 10 s */
    if (t - p->last < (p->tty ? 0.1 : 10.0)) return;
    p->last = t;
    progress_draw(p, extra, 0);
}

void progress_finish(Progress *p, const char *extra) {
    p->done = p->total > p->done ? p->done : p->total;
    progress_draw(p, extra, 1);
}
