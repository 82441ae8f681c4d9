/* safetensors.c - a strict safetensors parser and an atomic writer, network weights by
 * torchvision name, training checkpoints and self-describing model files.
 *
 * The format (https://github.com/huggingface/safetensors):
 *   u64 little-endian N | N bytes of JSON header | data section
 * The header is one JSON object: tensor name -> {"dtype", "shape", "data_offsets": [b, e]}
 * with offsets relative to the data section, plus an optional "__metadata__" object of
 * string -> string. The tensors must tile the data section exactly: no overlap, no holes.
 * Every error names the file, the tensor and what was expected against what was found. */
#include "resnet.h"
#include "platform.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_HEADER  (100u * 1000u * 1000u)
#define JSON_MAX_DEPTH 64

/* ---------------------------------------------------------------- a small JSON parser */

typedef enum { J_NULL, J_BOOL, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT } JsonType;

typedef struct Json {
    JsonType type;
    int boolean;
    double number;
    int is_uint; /* a non-negative integer literal that fits in 64 bits */
    uint64_t uint;
    char *str;          /* J_STRING: UTF-8, NUL-terminated (\u0000 is rejected) */
    int n;              /* J_ARRAY / J_OBJECT: number of items */
    struct Json *items; /* array elements or object values */
    char **keys;        /* J_OBJECT: keys, index-aligned with items */
} Json;

typedef struct {
    const char *s;
    size_t len, pos;
    int depth;
    char err[160];
} JsonParser;

static void json_free(Json *j) {
    if (!j) return;
    free(j->str);
    for (int i = 0; i < j->n; i++) {
        json_free(&j->items[i]);
        if (j->keys) free(j->keys[i]);
    }
    free(j->items);
    free(j->keys);
    memset(j, 0, sizeof *j);
}

static int json_fail(JsonParser *p, const char *what) {
    if (!p->err[0]) snprintf(p->err, sizeof p->err, "%s at byte %zu", what, p->pos);
    return -1;
}

static void json_skip_space(JsonParser *p) {
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static int hex_digit(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int json_hex4(JsonParser *p, unsigned *out) {
    if (p->len - p->pos < 4) return json_fail(p, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit((unsigned char)p->s[p->pos + i]);
        if (d < 0) return json_fail(p, "bad hex digit in \\u escape");
        v = v * 16 + (unsigned)d;
    }
    p->pos += 4;
    *out = v;
    return 0;
}

static void put_utf8(Buf *b, unsigned cp) {
    unsigned char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (unsigned char)(0xc0 | cp >> 6);
        u[1] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (unsigned char)(0xe0 | cp >> 12);
        u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (unsigned char)(0xf0 | cp >> 18);
        u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (unsigned char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    buf_put(b, u, n);
}

/* Parses a string at p->pos (which is at the opening quote); *out is malloc'ed. */
static int json_string(JsonParser *p, char **out) {
    Buf b = {0};
    const char *why = NULL;
    p->pos++; /* opening quote */
    for (;;) {
        if (p->pos >= p->len) {
            why = "unterminated string";
            goto fail;
        }
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '"') break;
        if (c < 0x20) {
            why = "control character in string";
            goto fail;
        }
        if (c != '\\') { /* copy a run of plain bytes at once */
            size_t start = p->pos;
            while (p->pos < p->len && p->s[p->pos] != '"' && p->s[p->pos] != '\\' &&
                   (unsigned char)p->s[p->pos] >= 0x20)
                p->pos++;
            buf_put(&b, p->s + start, p->pos - start);
            continue;
        }
        if (++p->pos >= p->len) {
            why = "unterminated escape";
            goto fail;
        }
        static const char escapes[] = "\"\\/bfnrt", decoded[] = "\"\\/\b\f\n\r\t";
        const char *simple = strchr(escapes, p->s[p->pos]);
        if (simple && *simple) {
            buf_put(&b, &decoded[simple - escapes], 1);
            p->pos++;
            continue;
        }
        if (p->s[p->pos] != 'u') {
            why = "bad escape";
            goto fail;
        }
        p->pos++;
        unsigned cp, lo;
        if (json_hex4(p, &cp)) goto fail;
        if (cp >= 0xdc00 && cp <= 0xdfff) {
            why = "lone low surrogate";
            goto fail;
        }
        if (cp >= 0xd800 && cp <= 0xdbff) { /* a surrogate pair: \uD83D\uDE00 */
            if (p->len - p->pos < 2 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                why = "high surrogate without a low surrogate";
                goto fail;
            }
            p->pos += 2;
            if (json_hex4(p, &lo)) goto fail;
            if (lo < 0xdc00 || lo > 0xdfff) {
                why = "bad low surrogate";
                goto fail;
            }
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        }
        if (cp == 0) {
            why = "\\u0000 in string";
            goto fail;
        }
        put_utf8(&b, cp);
    }
    p->pos++; /* closing quote */
    *out = b.data ? b.data : rn_strdup("");
    return 0;
fail:
    buf_free(&b);
    return why ? json_fail(p, why) : -1;
}

static int digit_at(const JsonParser *p) {
    return p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9';
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_number(JsonParser *p, Json *j) {
    size_t start = p->pos;
    int negative = 0, integral = 1, overflow = 0;
    uint64_t u = 0;
    if (p->s[p->pos] == '-') {
        negative = 1;
        p->pos++;
    }
    if (!digit_at(p)) return json_fail(p, "bad number");
    if (p->s[p->pos] == '0')
        p->pos++;
    else
        while (digit_at(p)) {
            unsigned d = (unsigned)(p->s[p->pos++] - '0');
            if (u > (UINT64_MAX - d) / 10) overflow = 1;
            u = u * 10 + d;
        }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        integral = 0;
        p->pos++;
        if (!digit_at(p)) return json_fail(p, "bad number");
        while (digit_at(p)) p->pos++;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        integral = 0;
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-')) p->pos++;
        if (!digit_at(p)) return json_fail(p, "bad number");
        while (digit_at(p)) p->pos++;
    }
    size_t n = p->pos - start;
    char small[64], *tmp = n < sizeof small ? small : rn_realloc(NULL, n + 1);
    memcpy(tmp, p->s + start, n);
    tmp[n] = 0;
    j->type = J_NUMBER;
    j->number = strtod(tmp, NULL);
    if (tmp != small) free(tmp);
    j->is_uint = integral && !negative && !overflow;
    j->uint = u;
    return 0;
}

static int json_value(JsonParser *p, Json *j);

static int json_container(JsonParser *p, Json *j, int object) {
    char close = object ? '}' : ']';
    if (++p->depth > JSON_MAX_DEPTH) return json_fail(p, "nesting too deep");
    j->type = object ? J_OBJECT : J_ARRAY;
    p->pos++;
    int cap = 0;
    json_skip_space(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        p->depth--;
        return 0;
    }
    for (;;) {
        if (j->n == cap) {
            cap = cap ? cap * 2 : 8;
            j->items = rn_realloc(j->items, (size_t)cap * sizeof *j->items);
            if (object) j->keys = rn_realloc(j->keys, (size_t)cap * sizeof *j->keys);
        }
        Json *item = &j->items[j->n];
        memset(item, 0, sizeof *item);
        if (object) {
            json_skip_space(p);
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return json_fail(p, "expected a string key");
            if (json_string(p, &j->keys[j->n])) return -1;
            json_skip_space(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                free(j->keys[j->n]);
                return json_fail(p, "expected ':'");
            }
            p->pos++;
        }
        j->n++;
        if (json_value(p, item)) return -1;
        json_skip_space(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            break;
        }
        return json_fail(p, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    p->depth--;
    return 0;
}

static int json_literal(JsonParser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return json_fail(p, "unexpected character");
    p->pos += n;
    return 0;
}

static int json_value(JsonParser *p, Json *j) {
    json_skip_space(p);
    if (p->pos >= p->len) return json_fail(p, "unexpected end");
    char c = p->s[p->pos];
    if (c == '{') return json_container(p, j, 1);
    if (c == '[') return json_container(p, j, 0);
    if (c == '"') {
        j->type = J_STRING;
        return json_string(p, &j->str);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return json_number(p, j);
    if (c == 't') {
        j->type = J_BOOL;
        j->boolean = 1;
        return json_literal(p, "true");
    }
    if (c == 'f') {
        j->type = J_BOOL;
        return json_literal(p, "false");
    }
    if (c == 'n') {
        j->type = J_NULL;
        return json_literal(p, "null");
    }
    return json_fail(p, "unexpected character");
}

/* Parse one complete JSON document (whitespace around it allowed). On failure err says
 * what and where. */
static int json_parse(const char *s, size_t len, Json *j, char *err, size_t err_len) {
    JsonParser p = {s, len, 0, 0, {0}};
    memset(j, 0, sizeof *j);
    size_t bad = utf8_valid_len((const uint8_t *)s, len);
    if (bad < len) {
        snprintf(err, err_len, "invalid UTF-8 at byte %zu", bad);
        return -1;
    }
    int rc = json_value(&p, j);
    if (rc == 0) {
        json_skip_space(&p);
        if (p.pos != len) rc = json_fail(&p, "trailing characters");
    }
    if (rc) {
        snprintf(err, err_len, "%s", p.err);
        json_free(j);
    }
    return rc;
}

static const char *json_type_name(JsonType t) {
    static const char *names[] = {"null",     "a boolean", "a number",
                                  "a string", "an array",  "an object"};
    return names[t];
}

static const Json *json_get(const Json *obj, const char *key) {
    for (int i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

/* ---------------------------------------------------------------- dtypes, numbers */

static const struct {
    const char *name;
    StDtype dtype;
    int size;
} st_dtypes[] = {
    {"F32", ST_F32, 4},    {"F16", ST_F16, 2},       {"BF16", ST_BF16, 2},     {"F64", ST_F64, 8},
    {"I64", ST_I64, 8},    {"I32", ST_I32, 4},       {"U8", ST_U8, 1},         {"I8", ST_OTHER, 1},
    {"BOOL", ST_OTHER, 1}, {"I16", ST_OTHER, 2},     {"U16", ST_OTHER, 2},     {"U32", ST_OTHER, 4},
    {"U64", ST_OTHER, 8},  {"F8_E4M3", ST_OTHER, 1}, {"F8_E5M2", ST_OTHER, 1},
};
#define ST_N_DTYPES (int)(sizeof st_dtypes / sizeof st_dtypes[0])

static int dtype_size(const char *name) {
    for (int i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(st_dtypes[i].name, name) == 0) return st_dtypes[i].size;
    return 0;
}

static float bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE half: 1 sign, 5 exponent (bias 15), 10 mantissa bits. Every half is exactly a float. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24 */
        float v = (float)mant * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31) return bits_to_f32(sign | 0x7f800000u | mant << 13); /* inf, nan */
    return bits_to_f32(sign | (exp + 112) << 23 | mant << 13);
}

/* bfloat16 is the top half of a float32. */
static float bf16_to_f32(uint16_t h) { return bits_to_f32((uint32_t)h << 16); }

static void shape_str(char *out, size_t len, int ndim, const int64_t *shape) {
    size_t off = (size_t)snprintf(out, len, "[");
    for (int i = 0; i < ndim && off < len; i++)
        off += (size_t)snprintf(out + off, len - off, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (off < len) snprintf(out + off, len - off, "]");
}

/* ---------------------------------------------------------------- parsing and validation */

void st_close(StFile *f) {
    if (!f) return;
    if (f->mapped)
        rn_unmap_file(f->file, f->file_len);
    else
        free(f->file);
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta_keys[i]);
        free(f->meta_vals[i]);
    }
    free(f->meta_keys);
    free(f->meta_vals);
    memset(f, 0, sizeof *f);
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_tensor_offset(const void *a, const void *b) {
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* First duplicate in a list of strings (sorted copy), NULL when all differ. */
static const char *first_duplicate(char **names, int n) {
    if (n < 2) return NULL;
    char **sorted = rn_realloc(NULL, (size_t)n * sizeof *sorted);
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str_ptr);
    const char *dup = NULL;
    for (int i = 1; i < n && !dup; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) dup = sorted[i];
    free(sorted);
    return dup;
}

static int parse_metadata(StFile *f, const Json *m) {
    if (m->type != J_OBJECT) {
        rn_set_error("%s: __metadata__: expected an object, found %s", f->path,
                     json_type_name(m->type));
        return -1;
    }
    f->meta_keys = rn_realloc(NULL, ((size_t)m->n + 1) * sizeof(char *));
    f->meta_vals = rn_realloc(NULL, ((size_t)m->n + 1) * sizeof(char *));
    for (int i = 0; i < m->n; i++) {
        if (m->items[i].type != J_STRING) {
            rn_set_error("%s: __metadata__ \"%s\": expected a string value, found %s", f->path,
                         m->keys[i], json_type_name(m->items[i].type));
            return -1;
        }
        f->meta_keys[f->n_meta] = rn_strdup(m->keys[i]);
        f->meta_vals[f->n_meta] = rn_strdup(m->items[i].str);
        f->n_meta++;
    }
    const char *dup = first_duplicate(f->meta_keys, f->n_meta);
    if (dup) {
        rn_set_error("%s: __metadata__: duplicate key \"%s\"", f->path, dup);
        return -1;
    }
    return 0;
}

static int parse_tensor(StFile *f, const char *name, const Json *v, StTensor *t) {
    const char *path = f->path;
    if (v->type != J_OBJECT) {
        rn_set_error("%s: tensor '%s': expected an object, found %s", path, name,
                     json_type_name(v->type));
        return -1;
    }
    for (int i = 0; i < v->n; i++) {
        const char *k = v->keys[i];
        if (strcmp(k, "dtype") && strcmp(k, "shape") && strcmp(k, "data_offsets")) {
            rn_set_error("%s: tensor '%s': unexpected field \"%s\" (expected dtype, shape, "
                         "data_offsets)",
                         path, name, k);
            return -1;
        }
        for (int k2 = 0; k2 < i; k2++)
            if (strcmp(v->keys[k2], k) == 0) {
                rn_set_error("%s: tensor '%s': duplicate field \"%s\"", path, name, k);
                return -1;
            }
    }
    const Json *dtype = json_get(v, "dtype"), *shape = json_get(v, "shape");
    const Json *offs = json_get(v, "data_offsets");
    const char *missing = !dtype ? "dtype" : !shape ? "shape" : !offs ? "data_offsets" : NULL;
    if (missing) {
        rn_set_error("%s: tensor '%s': missing \"%s\"", path, name, missing);
        return -1;
    }
    if (dtype->type != J_STRING) {
        rn_set_error("%s: tensor '%s': dtype: expected a string, found %s", path, name,
                     json_type_name(dtype->type));
        return -1;
    }
    int size = dtype_size(dtype->str);
    if (!size) {
        rn_set_error("%s: tensor '%s': unknown dtype \"%.40s\" (expected F32, F16, BF16, F64, "
                     "I64, I32, U8, ...)",
                     path, name, dtype->str);
        return -1;
    }
    for (int i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(st_dtypes[i].name, dtype->str) == 0) t->dtype = st_dtypes[i].dtype;
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dtype->str);

    if (shape->type != J_ARRAY) {
        rn_set_error("%s: tensor '%s': shape: expected an array, found %s", path, name,
                     json_type_name(shape->type));
        return -1;
    }
    if (shape->n > ST_MAX_DIMS) {
        rn_set_error("%s: tensor '%s': shape has %d dimensions, expected at most %d", path, name,
                     shape->n, ST_MAX_DIMS);
        return -1;
    }
    t->ndim = shape->n;
    uint64_t bytes = (uint64_t)size;
    for (int i = 0; i < shape->n; i++) {
        const Json *d = &shape->items[i];
        if (d->type != J_NUMBER || !d->is_uint || d->uint > (uint64_t)INT64_MAX) {
            char found[64];
            if (d->type == J_NUMBER)
                snprintf(found, sizeof found, "%g", d->number);
            else
                snprintf(found, sizeof found, "%s", json_type_name(d->type));
            rn_set_error("%s: tensor '%s': shape[%d]: expected a non-negative integer, found %s",
                         path, name, i, found);
            return -1;
        }
        t->shape[i] = (int64_t)d->uint;
        if (d->uint && bytes > UINT64_MAX / d->uint) {
            rn_set_error("%s: tensor '%s': shape overflows: element count times %d bytes "
                         "exceeds 2^64",
                         path, name, size);
            return -1;
        }
        bytes *= d->uint;
    }
    if (offs->type != J_ARRAY || offs->n != 2 || offs->items[0].type != J_NUMBER ||
        offs->items[1].type != J_NUMBER || !offs->items[0].is_uint || !offs->items[1].is_uint) {
        rn_set_error("%s: tensor '%s': data_offsets: expected [begin, end] non-negative integers",
                     path, name);
        return -1;
    }
    t->begin = offs->items[0].uint;
    t->end = offs->items[1].uint;
    if (t->begin > t->end || t->end > (uint64_t)f->data_len) {
        rn_set_error("%s: tensor '%s': data_offsets [%llu, %llu] out of range: expected "
                     "begin <= end <= %zu (data section size)",
                     path, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                     f->data_len);
        return -1;
    }
    if (t->end - t->begin != bytes) {
        char s[200];
        shape_str(s, sizeof s, t->ndim, t->shape);
        rn_set_error("%s: tensor '%s': data_offsets span %llu bytes, expected %llu (%s %s)", path,
                     name, (unsigned long long)(t->end - t->begin), (unsigned long long)bytes,
                     t->dtype_name, s);
        return -1;
    }
    return 0;
}

/* The tensors, sorted by offset, must tile [0, data_len) exactly. */
static int check_layout(StFile *f) {
    int n = f->n_tensors;
    StTensor **by_off = rn_realloc(NULL, ((size_t)n + 1) * sizeof *by_off);
    for (int i = 0; i < n; i++) by_off[i] = &f->tensors[i];
    qsort(by_off, (size_t)n, sizeof *by_off, cmp_tensor_offset);
    uint64_t cursor = 0;
    const char *prev = NULL;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        const StTensor *t = by_off[i];
        if (t->begin < cursor) {
            rn_set_error("%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' "
                         "(expected begin >= %llu)",
                         f->path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                         prev, (unsigned long long)cursor);
            rc = -1;
        } else if (t->begin > cursor) {
            rn_set_error("%s: tensor '%s': gap of %llu bytes before it in the data section "
                         "(expected begin %llu, found %llu)",
                         f->path, t->name, (unsigned long long)(t->begin - cursor),
                         (unsigned long long)cursor, (unsigned long long)t->begin);
            rc = -1;
        }
        cursor = t->end;
        prev = t->name;
    }
    if (!rc && cursor != (uint64_t)f->data_len) {
        rn_set_error("%s: %llu unused bytes at the end of the data section (tensors end at "
                     "%llu, expected %zu)",
                     f->path, (unsigned long long)(f->data_len - cursor),
                     (unsigned long long)cursor, f->data_len);
        rc = -1;
    }
    free(by_off);
    return rc;
}

/* Takes ownership of buf (malloc'ed, len bytes). */
static int st_parse_owned(uint8_t *buf, size_t len, int mapped, const char *label, StFile *f) {
    memset(f, 0, sizeof *f);
    snprintf(f->path, sizeof f->path, "%s", label ? label : "<memory>");
    f->file = buf;
    f->file_len = len;
    f->mapped = mapped;
    if (len < 8) {
        rn_set_error("%s: truncated: %zu bytes, expected at least 8 (the header length)", f->path,
                     len);
        st_close(f);
        return -1;
    }
    uint64_t n;
    rn_le_load(&n, buf, 1, 8);
    if (n > (uint64_t)(len - 8)) {
        rn_set_error("%s: header length %llu is larger than the file (%zu bytes after the "
                     "8-byte length): truncated or not a safetensors file",
                     f->path, (unsigned long long)n, len - 8);
        st_close(f);
        return -1;
    }
    if (n > ST_MAX_HEADER) {
        rn_set_error("%s: header length %llu exceeds the %u-byte limit", f->path,
                     (unsigned long long)n, ST_MAX_HEADER);
        st_close(f);
        return -1;
    }
    f->data = buf + 8 + n;
    f->data_len = len - 8 - (size_t)n;
    const char *h = (const char *)buf + 8;
    if (n < 2 || h[0] != '{') { /* so a header that parses is an object */
        rn_set_error("%s: header: expected a JSON object starting with '{', found %s", f->path,
                     n == 0        ? "an empty header"
                     : h[0] == '[' ? "an array"
                     : h[0] == '"' ? "a string"
                                   : "another value");
        st_close(f);
        return -1;
    }
    Json root;
    char err[200];
    if (json_parse(h, (size_t)n, &root, err, sizeof err)) {
        rn_set_error("%s: header JSON: %s", f->path, err);
        st_close(f);
        return -1;
    }
    int rc = 0, n_meta_objects = 0;
    f->tensors = rn_realloc(NULL, ((size_t)root.n + 1) * sizeof *f->tensors);
    memset(f->tensors, 0, ((size_t)root.n + 1) * sizeof *f->tensors);
    for (int i = 0; i < root.n && !rc; i++) {
        if (strcmp(root.keys[i], "__metadata__") == 0) {
            if (n_meta_objects++) {
                rn_set_error("%s: header: duplicate \"__metadata__\"", f->path);
                rc = -1;
            } else {
                rc = parse_metadata(f, &root.items[i]);
            }
            continue;
        }
        StTensor *t = &f->tensors[f->n_tensors];
        t->name = rn_strdup(root.keys[i]);
        f->n_tensors++;
        rc = parse_tensor(f, t->name, &root.items[i], t);
    }
    json_free(&root);
    if (!rc) {
        char **names = rn_realloc(NULL, ((size_t)f->n_tensors + 1) * sizeof *names);
        for (int i = 0; i < f->n_tensors; i++) names[i] = f->tensors[i].name;
        const char *dup = first_duplicate(names, f->n_tensors);
        if (dup) {
            rn_set_error("%s: tensor '%s': duplicate name in the header", f->path, dup);
            rc = -1;
        }
        free(names);
    }
    if (!rc) rc = check_layout(f);
    if (rc) st_close(f);
    return rc;
}

int st_parse(const uint8_t *buf, size_t len, const char *label, StFile *f) {
    uint8_t *copy = malloc(len + 1);
    if (!copy) {
        memset(f, 0, sizeof *f);
        rn_set_error("%s: cannot allocate %zu bytes", label ? label : "<memory>", len);
        return -1;
    }
    if (len) memcpy(copy, buf, len);
    return st_parse_owned(copy, len, 0, label, f);
}

/* The file mapped where the platform can (nothing here writes to it), else read. */
int st_open(const char *path, StFile *f) {
    size_t len = 0;
    memset(f, 0, sizeof *f);
    uint8_t *map = rn_map_file(path, &len);
    if (map) return st_parse_owned(map, len, 1, path, f);
    uint8_t *buf = read_file(path, &len);
    if (!buf) return -1;
    return st_parse_owned(buf, len, 0, path, f);
}

const StTensor *st_find(const StFile *f, const char *name) {
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *st_meta(const StFile *f, const char *key) {
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_keys[i], key) == 0) return f->meta_vals[i];
    return NULL;
}

static int64_t st_numel(const StTensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int st_read_f32(const StFile *f, const StTensor *t, float *out) {
    const uint8_t *p = f->data + t->begin;
    size_t n = (size_t)st_numel(t);
    switch (t->dtype) {
    case ST_F32: rn_le_load(out, p, n, 4); return 0;
    case ST_F16:
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            rn_le_load(&h, p + 2 * i, 1, 2);
            out[i] = t->dtype == ST_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
        return 0;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            rn_le_load(&d, p + 8 * i, 1, 8);
            out[i] = (float)d;
        }
        return 0;
    default:
        rn_set_error("%s: tensor '%s': dtype %s cannot be read as float32 (expected F32, F16, "
                     "BF16 or F64)",
                     f->path, t->name, t->dtype_name);
        return -1;
    }
}

/* I64 tensor of exactly n elements into out (as raw 64-bit patterns). */
static int st_read_u64(const StFile *f, const char *name, uint64_t *out, int n) {
    const StTensor *t = st_find(f, name);
    if (!t) {
        rn_set_error("%s: tensor '%s' is missing", f->path, name);
        return -1;
    }
    if (t->dtype != ST_I64 || st_numel(t) != n) {
        char s[200];
        shape_str(s, sizeof s, t->ndim, t->shape);
        rn_set_error("%s: tensor '%s': expected I64 [%d], found %s %s", f->path, name, n,
                     t->dtype_name, s);
        return -1;
    }
    rn_le_load(out, f->data + t->begin, (size_t)n, 8);
    return 0;
}

/* ---------------------------------------------------------------- writer */

void st_writer_init(StWriter *w) { memset(w, 0, sizeof *w); }

static void writer_add(StWriter *w, const char *name, const char *dtype, int ndim,
                       const int64_t *shape, const void *data, int elem_size) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    size_t begin = w->data.len;
    if (n) { /* data may be NULL when empty */
        buf_put(&w->data, data, n * (size_t)elem_size);
        rn_le_store(w->data.data + begin, w->data.data + begin, n, (size_t)elem_size);
    }
    Buf *h = &w->header_entries;
    if (w->n_tensors) buf_put(h, ",", 1);
    buf_json_string(h, name);
    buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", dtype);
    for (int i = 0; i < ndim; i++) buf_printf(h, "%s%lld", i ? "," : "", (long long)shape[i]);
    buf_printf(h, "],\"data_offsets\":[%zu,%zu]}", begin, w->data.len);
    w->n_tensors++;
}

void st_writer_add_f32(StWriter *w, const char *name, int ndim, const int64_t *shape,
                       const float *data) {
    writer_add(w, name, "F32", ndim, shape, data, 4);
}

void st_writer_add_i64(StWriter *w, const char *name, int ndim, const int64_t *shape,
                       const int64_t *data) {
    writer_add(w, name, "I64", ndim, shape, data, 8);
}

/* Set key to value; a key given twice keeps the last value. */
void st_writer_meta(StWriter *w, const char *key, const char *value) {
    for (int i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta_keys[i], key) == 0) {
            free(w->meta_vals[i]);
            w->meta_vals[i] = rn_strdup(value);
            return;
        }
    w->meta_keys = rn_realloc(w->meta_keys, ((size_t)w->n_meta + 1) * sizeof(char *));
    w->meta_vals = rn_realloc(w->meta_vals, ((size_t)w->n_meta + 1) * sizeof(char *));
    w->meta_keys[w->n_meta] = rn_strdup(key);
    w->meta_vals[w->n_meta] = rn_strdup(value);
    w->n_meta++;
}

int st_writer_save(StWriter *w, const char *path) {
    Buf h = {0};
    buf_put(&h, "12345678{", 9); /* the length is filled in below */
    if (w->n_meta) {
        buf_put(&h, "\"__metadata__\":{", 16);
        for (int i = 0; i < w->n_meta; i++) {
            if (i) buf_put(&h, ",", 1);
            buf_json_string(&h, w->meta_keys[i]);
            buf_put(&h, ":", 1);
            buf_json_string(&h, w->meta_vals[i]);
        }
        buf_put(&h, "}", 1);
        if (w->n_tensors) buf_put(&h, ",", 1);
    }
    if (w->header_entries.len) buf_put(&h, w->header_entries.data, w->header_entries.len);
    buf_put(&h, "}", 1);
    while (h.len % 8) buf_put(&h, " ", 1); /* the data section starts 8-byte aligned */
    uint64_t n = h.len - 8;
    rn_le_store(h.data, &n, 1, 8);
    /* Put the header in front of the data in place (no second copy of the weights),
     * write, then move the data back so the writer stays usable. */
    size_t data_len = w->data.len, hl = h.len;
    buf_put(&w->data, h.data, hl);
    memmove(w->data.data + hl, w->data.data, data_len);
    memcpy(w->data.data, h.data, hl);
    int rc = write_file_atomic(path, w->data.data, hl + data_len);
    memmove(w->data.data, w->data.data + hl, data_len);
    w->data.len = data_len;
    buf_free(&h);
    return rc;
}

void st_writer_free(StWriter *w) {
    buf_free(&w->header_entries);
    buf_free(&w->data);
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta_keys[i]);
        free(w->meta_vals[i]);
    }
    free(w->meta_keys);
    free(w->meta_vals);
    memset(w, 0, sizeof *w);
}

/* ---------------------------------------------------------------- network weights */

#define CHECKPOINT_FORMAT "resnet-c-checkpoint"
#define MODEL_FORMAT      "resnet-c-model"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int same_shape(const Param *p, const StTensor *t) {
    if (p->ndim != t->ndim) return 0;
    for (int i = 0; i < p->ndim; i++)
        if (p->shape[i] != t->shape[i]) return 0;
    return 1;
}

static const Param *find_param(const Net *net, const char *name) {
    for (int i = 0; i < net->n_params; i++)
        if (strcmp(net->params[i].name, name) == 0) return &net->params[i];
    return NULL;
}

/* The first component of a dotted name: "layer1.0.conv1.weight" -> "layer1". */
static size_t module_len(const char *name) {
    const char *dot = strchr(name, '.');
    return dot ? (size_t)(dot - name) : strlen(name);
}

/* name is module.X (module itself may be dotted, "classifier.6"). */
static int starts_with_module(const char *name, const char *module) {
    size_t n = strlen(module);
    return strncmp(name, module, n) == 0 && name[n] == '.';
}

/* A backbone (not head) parameter lives inside module. */
static int backbone_has(const Net *net, const char *module) {
    for (int i = 0; i < net->n_params; i++)
        if (net->params[i].stage != net_head_group(net) &&
            starts_with_module(net->params[i].name, module))
            return 1;
    return 0;
}

/* Does a file tensor belong to the replaced head: its top-level module is one of the
 * head's own modules, or the stock classifier's ("fc" in torchvision, "linear" in the
 * CIFAR ResNets, "classifier" in VGG when an inception head replaces all of it), and no
 * backbone parameter lives there; or it is the stock classifier itself (VGG's
 * classifier.6 beside the backbone's classifier.0 and .3). */
static int belongs_to_head(const Net *net, const char *name) {
    const ArchSpec *own = arch_find(net->arch);
    if (own && starts_with_module(name, own->classifier) && !backbone_has(net, own->classifier))
        return 1; /* the stock classifier of a multi-level name (VGG's classifier.6) */
    size_t n = module_len(name);
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->params[i];
        if (p->stage != net_head_group(net) && module_len(p->name) == n &&
            strncmp(p->name, name, n) == 0)
            return 0;
    }
    const ArchSpec *arch = arch_find(net->arch);
    for (int i = 0; i < arch_count(); i++) { /* the net's own classifier, else any's */
        const char *c = arch ? arch->classifier : arch_at(i)->classifier;
        if (module_len(c) == n && strncmp(name, c, n) == 0) return 1;
    }
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->params[i];
        if (p->stage == net_head_group(net) && module_len(p->name) == n &&
            strncmp(p->name, name, n) == 0)
            return 1;
    }
    return 0;
}

/* Appends name to a short comma-separated list (the first few of count). */
static void list_name(char *list, size_t len, int count, const char *name) {
    size_t off = strlen(list);
    if (count < 4)
        snprintf(list + off, len - off, "%s%s", count ? ", " : "", name);
    else if (count == 4)
        snprintf(list + off, len - off, ", ...");
}

/* The size-byte little-endian unsigned integer at p, on any host. */
static uint64_t load_le(const uint8_t *p, size_t size) {
    uint64_t v = 0;
    for (size_t k = size; k-- > 0;) v = v << 8 | p[k];
    return v;
}

/* The index of the first NaN or infinity of a float tensor, or -1 when all are finite. */
static int64_t first_non_finite(const StFile *f, const StTensor *t, double *value) {
    const uint8_t *p = f->data + t->begin;
    int64_t n = st_numel(t), i = 0;
    /* F32, nearly every file: a float is NaN or infinite when its exponent bits are all
     * set. Blocks of 1024 with no early exit (the compiler vectorises them), so a tensor of
     * finite floats is checked at memory speed; a block with one goes through the loop
     * below, which finds it. */
    while (t->dtype == ST_F32 && i < n) {
        int64_t end = n - i < 1024 ? n : i + 1024;
        uint32_t bad = 0;
        for (int64_t j = i; j < end; j++)
            bad |= (uint32_t)((load_le(p + 4 * j, 4) & 0x7f800000u) == 0x7f800000u);
        if (bad) break;
        i = end;
    }
    for (; i < n; i++) {
        double v;
        switch (t->dtype) {
        case ST_F32: v = bits_to_f32((uint32_t)load_le(p + 4 * i, 4)); break;
        case ST_F16: v = f16_to_f32((uint16_t)load_le(p + 2 * i, 2)); break;
        case ST_BF16: v = bf16_to_f32((uint16_t)load_le(p + 2 * i, 2)); break;
        case ST_F64: {
            uint64_t u = load_le(p + 8 * i, 8);
            memcpy(&v, &u, 8);
            break;
        }
        default: return -1;
        }
        if (!isfinite(v) || !isfinite((float)v)) {
            *value = v;
            return i;
        }
    }
    return -1;
}

/* One non-finite weight silently ruins every prediction (one Inf in a ResNet's conv: 10 %
 * accuracy; one NaN in a head bias: class 0 for everything), so none is ever loaded. */
static int check_finite(const StFile *f, const StTensor *t) {
    double v = 0;
    int64_t i = first_non_finite(f, t, &v);
    if (i < 0) return 0;
    char s[200];
    shape_str(s, sizeof s, t->ndim, t->shape);
    char what[64];
    if (isnan(v))
        snprintf(what, sizeof what, "NaN");
    else if (isinf(v))
        snprintf(what, sizeof what, "%sinfinity", v < 0 ? "-" : "");
    else
        snprintf(what, sizeof what, "%g, beyond float32", v);
    rn_set_error("%s: tensor '%s' %s: element %lld is %s (non-finite weights are refused)", f->path,
                 t->name, s, (long long)i, what);
    return -1;
}

/* The "bn_eps" metadata: one batch-norm epsilon for every backbone batch norm, written
 * where the network's differs from what its architecture builds (a tf.keras ResNet50's
 * 1.001e-5 against keras_resnet50's 1e-3: tools/keras2safetensors.py writes it, model
 * files and checkpoints keep it). *eps = 0: absent. */
static int meta_bn_eps(const StFile *f, float *eps) {
    const char *s = st_meta(f, "bn_eps");
    *eps = 0;
    if (!s) return 0;
    char *end;
    float v = strtof(s, &end);
    if (end == s || *end || !(v > 0.0f && v < 1.0f)) {
        rn_set_error("%s: metadata \"bn_eps\": expected a number in (0, 1), found \"%s\"", f->path,
                     s);
        return -1;
    }
    *eps = v;
    return 0;
}

static int is_backbone_bn(const Net *net, const Node *nd) {
    return nd->op == OP_BN && nd->stage != net_head_group(net);
}

static void writer_add_bn_eps(StWriter *w, const Net *net) {
    float eps = 0;
    for (int i = 0; i < net->n_nodes; i++)
        if (is_backbone_bn(net, &net->nodes[i])) {
            if (eps != 0 && net->nodes[i].eps != eps) return; /* not one value */
            eps = net->nodes[i].eps;
        }
    if (eps == 0 || !arch_find(net->arch)) return;
    Net *built = resnet_describe(net->arch, net->num_classes, NULL);
    float stock = 0;
    for (int i = 0; built && i < built->n_nodes && stock == 0; i++)
        if (is_backbone_bn(built, &built->nodes[i])) stock = built->nodes[i].eps;
    net_free(built);
    if (stock == eps) return;
    char v[32];
    for (int prec = 1; prec <= 9; prec++) { /* the shortest text that reads back as eps */
        snprintf(v, sizeof v, "%.*g", prec, (double)eps);
        if (strtof(v, NULL) == eps) break;
    }
    st_writer_meta(w, "bn_eps", v);
}

static int check_weights(const Net *net, const StFile *f, int allow_new_head, int *new_head_out,
                         int verbose) {
    const char *fmt = st_meta(f, "format");
    float bn_eps;
    if (meta_bn_eps(f, &bn_eps)) return -1;
    int is_checkpoint = fmt && strcmp(fmt, CHECKPOINT_FORMAT) == 0;
    char s1[200], s2[200];

    /* 1. decide whether the head is replaced: a head tensor missing or of another shape */
    int new_head = 0;
    if (allow_new_head) {
        for (int i = 0; i < net->n_params && !new_head; i++) {
            const Param *p = &net->params[i];
            if (p->stage != net_head_group(net)) continue;
            const StTensor *t = st_find(f, p->name);
            shape_str(s2, sizeof s2, p->ndim, p->shape);
            if (!t) {
                if (verbose)
                    fprintf(stderr, "%s: not in %s, model needs %s: head re-initialised\n", p->name,
                            f->path, s2);
                new_head = 1;
            } else if (!same_shape(p, t)) {
                shape_str(s1, sizeof s1, t->ndim, t->shape);
                if (verbose)
                    fprintf(stderr, "%s: file has %s, model needs %s: head re-initialised\n",
                            p->name, s1, s2);
                new_head = 1;
            }
        }
    }

    /* 2. validate everything before touching the network */
    char missing[400] = "";
    int n_missing = 0, n_missing_head = 0;
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->params[i];
        if (new_head && p->stage == net_head_group(net)) continue;
        const StTensor *t = st_find(f, p->name);
        if (!t) {
            list_name(missing, sizeof missing, n_missing++, p->name);
            n_missing_head += p->stage == net_head_group(net);
            continue;
        }
        if (!same_shape(p, t)) {
            shape_str(s1, sizeof s1, t->ndim, t->shape);
            shape_str(s2, sizeof s2, p->ndim, p->shape);
            rn_set_error(
                "%s: tensor '%s': shape mismatch: file has %s, model needs %s%s", f->path, p->name,
                s1, s2,
                p->stage == net_head_group(net) ? " (a different head needs a new-head load)" : "");
            return -1;
        }
        if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64) {
            rn_set_error("%s: tensor '%s': dtype %s, expected F32, F16, BF16 or F64", f->path,
                         p->name, t->dtype_name);
            return -1;
        }
        if (check_finite(f, t)) return -1;
    }
    if (n_missing) {
        rn_set_error("%s: %d tensor%s the %s model needs %s missing from the file: %s%s", f->path,
                     n_missing, n_missing == 1 ? "" : "s", net->arch, n_missing == 1 ? "is" : "are",
                     missing,
                     n_missing == n_missing_head ? " (the file has another head: a different "
                                                   "head needs a new-head load)"
                                                 : "");
        return -1;
    }
    char extra[400] = "";
    int n_extra = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const char *name = f->tensors[i].name;
        if (ends_with(name, "num_batches_tracked")) continue;
        if (is_checkpoint && (starts_with(name, "optim.") || starts_with(name, "rng."))) continue;
        if (find_param(net, name)) continue;
        if (new_head && belongs_to_head(net, name)) continue;
        list_name(extra, sizeof extra, n_extra++, name);
    }
    if (n_extra) {
        rn_set_error("%s: %d unexpected tensor%s in the file (not in the %s model): %s", f->path,
                     n_extra, n_extra == 1 ? "" : "s", net->arch, extra);
        return -1;
    }
    *new_head_out = new_head;
    return 0;
}

int net_check_weights(const Net *net, const StFile *f, int allow_new_head) {
    int new_head;
    return check_weights(net, f, allow_new_head, &new_head, 0);
}

int net_load_weights_st(Net *net, const StFile *f, int allow_new_head) {
    int new_head;
    if (check_weights(net, f, allow_new_head, &new_head, 1)) return -1;

    /* 3. copy */
    for (int i = 0; i < net->n_params; i++) {
        Param *p = &net->params[i];
        if (new_head && p->stage == net_head_group(net)) continue;
        if (st_read_f32(f, st_find(f, p->name), p->data)) return -1;
    }
    float bn_eps;
    meta_bn_eps(f, &bn_eps); /* checked above */
    for (int i = 0; bn_eps > 0 && i < net->n_nodes; i++)
        if (is_backbone_bn(net, &net->nodes[i])) net->nodes[i].eps = bn_eps;
    return 0;
}

int net_load_weights(Net *net, const char *path, int allow_new_head) {
    StFile f;
    if (st_open(path, &f)) return -1;
    int rc = net_load_weights_st(net, &f, allow_new_head);
    st_close(&f);
    return rc;
}

/* Size the data buffer once for everything that will be added (plus room for the header
 * st_writer_save puts in front), so big models are not copied while the buffer grows. */
static void writer_reserve(StWriter *w, size_t bytes) {
    size_t cap = w->data.len + bytes + (1u << 20);
    if (cap <= w->data.cap) return;
    char *d = realloc(w->data.data, cap);
    if (!d) return; /* buf_put will try again, and report */
    w->data.data = d;
    w->data.cap = cap;
}

static size_t net_bytes(const Net *net) {
    size_t n = 0;
    for (int i = 0; i < net->n_params; i++) n += (size_t)net->params[i].numel * sizeof(float);
    return n;
}

static void writer_add_params(StWriter *w, const Net *net) {
    writer_add_bn_eps(w, net);
    writer_reserve(w, net_bytes(net));
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->params[i];
        st_writer_add_f32(w, p->name, p->ndim, p->shape, p->data);
    }
}

int net_save_weights(const Net *net, const char *path, const char **meta_keys,
                     const char **meta_vals, int n_meta) {
    StWriter w;
    st_writer_init(&w);
    for (int i = 0; i < n_meta; i++) st_writer_meta(&w, meta_keys[i], meta_vals[i]);
    writer_add_params(&w, net);
    int rc = st_writer_save(&w, path);
    st_writer_free(&w);
    return rc;
}

/* ---------------------------------------------------------------- checkpoints */

static void add_rng(StWriter *w, const char *name, const Rng *r) {
    int64_t s[4];
    const int64_t shape[1] = {4};
    for (int i = 0; i < 4; i++) s[i] = (int64_t)r->s[i];
    st_writer_add_i64(w, name, 1, shape, s);
}

int checkpoint_save(const char *path, const Net *net, const Optimizer *opt, const Rng *rng,
                    const char **meta_keys, const char **meta_vals, int n_meta) {
    StWriter w;
    char v[64], name[RN_NAME_MAX + 16];
    st_writer_init(&w);
    for (int i = 0; i < n_meta; i++) st_writer_meta(&w, meta_keys[i], meta_vals[i]);
    st_writer_meta(&w, "format", CHECKPOINT_FORMAT);
    writer_reserve(&w, net_bytes(net) * (opt ? 3 : 1) + 64);
    writer_add_params(&w, net);
    add_rng(&w, "rng.net", &net->rng);
    if (rng) add_rng(&w, "rng.state", rng);
    if (opt) {
        /* %.9g round-trips every float exactly */
        st_writer_meta(&w, "optim.type", opt_name(opt->cfg.type));
#define META_F(key, x)                                                                             \
    do {                                                                                           \
        snprintf(v, sizeof v, "%.9g", (double)(x));                                                \
        st_writer_meta(&w, key, v);                                                                \
    } while (0)
        META_F("optim.lr", opt->cfg.lr);
        META_F("optim.beta1", opt->cfg.beta1);
        META_F("optim.beta2", opt->cfg.beta2);
        META_F("optim.eps", opt->cfg.eps);
        META_F("optim.weight_decay", opt->cfg.weight_decay);
        META_F("optim.momentum", opt->cfg.momentum);
#undef META_F
        snprintf(v, sizeof v, "%d", opt->cfg.nesterov);
        st_writer_meta(&w, "optim.nesterov", v);
        snprintf(v, sizeof v, "%lld", (long long)opt->step);
        st_writer_meta(&w, "optim.step", v);
        for (int i = 0; i < opt->n && i < net->n_params; i++) {
            const Param *p = &net->params[i];
            if (opt->m && opt->m[i]) {
                snprintf(name, sizeof name, "optim.m.%s", p->name);
                st_writer_add_f32(&w, name, p->ndim, p->shape, opt->m[i]);
            }
            if (opt->v && opt->v[i]) {
                snprintf(name, sizeof name, "optim.v.%s", p->name);
                st_writer_add_f32(&w, name, p->ndim, p->shape, opt->v[i]);
            }
        }
    }
    int rc = st_writer_save(&w, path);
    st_writer_free(&w);
    return rc;
}

static int meta_float(const StFile *f, const char *key, float *out) {
    const char *s = st_meta(f, key);
    char *end = NULL;
    if (s) *out = strtof(s, &end);
    if (!s || end == s || *end || !isfinite(*out)) {
        rn_set_error("%s: metadata \"%s\": expected a finite number, found %s%s%s", f->path, key,
                     s ? "\"" : "", s ? s : "nothing", s ? "\"" : "");
        return -1;
    }
    return 0;
}

static int meta_int(const StFile *f, const char *key, long long lo, long long hi, long long *out) {
    const char *s = st_meta(f, key);
    char *end = NULL;
    if (s) *out = strtoll(s, &end, 10);
    if (!s || end == s || *end || *out < lo || *out > hi) {
        rn_set_error("%s: metadata \"%s\": expected an integer in [%lld, %lld], found %s%s%s",
                     f->path, key, lo, hi, s ? "\"" : "", s ? s : "nothing", s ? "\"" : "");
        return -1;
    }
    return 0;
}

/* Validate then restore the optimizer state of the checkpoint. */
static int load_optimizer(const StFile *f, const Net *net, Optimizer *opt) {
    OptConfig cfg = opt->cfg;
    long long step, nesterov;
    const char *type = st_meta(f, "optim.type");
    if (!type || opt_parse(type, &cfg.type)) {
        rn_set_error("%s: metadata \"optim.type\": expected an optimizer name, found %s", f->path,
                     type ? type : "nothing (not saved with an optimizer)");
        return -1;
    }
    if (meta_float(f, "optim.lr", &cfg.lr) || meta_float(f, "optim.beta1", &cfg.beta1) ||
        meta_float(f, "optim.beta2", &cfg.beta2) || meta_float(f, "optim.eps", &cfg.eps) ||
        meta_float(f, "optim.weight_decay", &cfg.weight_decay) ||
        meta_float(f, "optim.momentum", &cfg.momentum) ||
        meta_int(f, "optim.nesterov", 0, 1, &nesterov) ||
        meta_int(f, "optim.step", 0, INT64_MAX, &step))
        return -1;
    cfg.nesterov = (int)nesterov;
    if (opt->n != net->n_params || !opt->m || !opt->v) {
        rn_set_error("%s: optimizer has %d state slots, expected %d (one per parameter)", f->path,
                     opt->n, net->n_params);
        return -1;
    }
    /* every optim.* tensor must name a parameter of this net, with its shape */
    for (int i = 0; i < f->n_tensors; i++) {
        const StTensor *t = &f->tensors[i];
        if (!starts_with(t->name, "optim.")) continue;
        const char *pname = starts_with(t->name, "optim.m.") || starts_with(t->name, "optim.v.")
                                ? t->name + 8
                                : NULL;
        const Param *p = pname ? find_param(net, pname) : NULL;
        if (!p) {
            rn_set_error("%s: tensor '%s': optimizer state for no parameter of the %s model",
                         f->path, t->name, net->arch);
            return -1;
        }
        if (!same_shape(p, t) || t->dtype != ST_F32) {
            char s1[200], s2[200];
            shape_str(s1, sizeof s1, t->ndim, t->shape);
            shape_str(s2, sizeof s2, p->ndim, p->shape);
            rn_set_error("%s: tensor '%s': file has %s %s, expected F32 %s", f->path, t->name,
                         t->dtype_name, s1, s2);
            return -1;
        }
        if (check_finite(f, t)) return -1;
    }
    opt->cfg = cfg;
    opt->step = step;
    char name[RN_NAME_MAX + 16];
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->params[i];
        for (int which = 0; which < 2; which++) {
            float **slot = which ? &opt->v[i] : &opt->m[i];
            snprintf(name, sizeof name, "optim.%c.%s", which ? 'v' : 'm', p->name);
            const StTensor *t = st_find(f, name);
            if (!t) { /* no state saved: the slot is unused, as in a fresh optimizer */
                rn_free(*slot);
                *slot = NULL;
                continue;
            }
            if (!*slot) *slot = rn_calloc((size_t)p->numel, sizeof(float));
            if (st_read_f32(f, t, *slot)) return -1;
        }
    }
    return 0;
}

int checkpoint_load_st(const StFile *f, Net *net, Optimizer *opt, Rng *rng) {
    const char *fmt = st_meta(f, "format");
    uint64_t net_rng[4], state[4];
    if (!fmt || strcmp(fmt, CHECKPOINT_FORMAT) != 0) {
        rn_set_error("%s: metadata \"format\": expected \"%s\", found %s%s%s", f->path,
                     CHECKPOINT_FORMAT, fmt ? "\"" : "", fmt ? fmt : "nothing", fmt ? "\"" : "");
        return -1;
    }
    if (st_read_u64(f, "rng.net", net_rng, 4) || (rng && st_read_u64(f, "rng.state", state, 4)) ||
        net_load_weights_st(net, f, 0) || (opt && load_optimizer(f, net, opt)))
        return -1;
    for (int i = 0; i < 4; i++) net->rng.s[i] = net_rng[i];
    if (rng)
        for (int i = 0; i < 4; i++) rng->s[i] = state[i];
    return 0;
}

int checkpoint_load(const char *path, Net *net, Optimizer *opt, Rng *rng, StFile *keep_meta) {
    StFile f;
    if (keep_meta) memset(keep_meta, 0, sizeof *keep_meta);
    if (st_open(path, &f)) return -1;
    int rc = checkpoint_load_st(&f, net, opt, rng);
    if (!rc && keep_meta)
        *keep_meta = f;
    else
        st_close(&f);
    return rc;
}

/* ---------------------------------------------------------------- model files */

int model_save(const char *path, const Net *net, const ModelInfo *info) {
    char head[256], v[64];
    if (strcmp(info->arch, net->arch) != 0 || info->num_classes != net->num_classes) {
        rn_set_error("%s: model info says %s with %d classes, the network is %s with %d", path,
                     info->arch, info->num_classes, net->arch, net->num_classes);
        return -1;
    }
    Buf classes = {0};
    buf_put(&classes, "[", 1);
    for (int i = 0; i < info->num_classes; i++) {
        if (i) buf_put(&classes, ",", 1);
        buf_json_string(&classes, info->class_names ? info->class_names[i] : "");
    }
    buf_put(&classes, "]", 1);
    head_format(&info->head, head, sizeof head);
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", MODEL_FORMAT);
    st_writer_meta(&w, "arch", info->arch);
    snprintf(v, sizeof v, "%d", info->num_classes);
    st_writer_meta(&w, "num_classes", v);
    st_writer_meta(&w, "classes", classes.data);
    st_writer_meta(&w, "head", head);
    st_writer_meta(&w, "preprocess", prep_name(info->prep.kind));
    snprintf(v, sizeof v, "%d", info->prep.size);
    st_writer_meta(&w, "img_size", v);
    snprintf(v, sizeof v, "%.9g", (double)info->prep.crop_pct);
    st_writer_meta(&w, "crop_pct", v);
    Buf groups = {0};
    net_groups_json(net, &groups);
    st_writer_meta(&w, "freeze_groups", groups.data);
    buf_free(&groups);
    if (info->training) st_writer_meta(&w, "training", info->training);
    writer_add_params(&w, net);
    int rc = st_writer_save(&w, path);
    st_writer_free(&w);
    buf_free(&classes);
    return rc;
}

void model_info_free(ModelInfo *info) {
    if (!info) return;
    if (info->class_names)
        for (int i = 0; i < info->num_classes; i++) free(info->class_names[i]);
    free(info->class_names);
    info->class_names = NULL;
    free(info->training);
    info->training = NULL;
}

/* The "classes" metadata: a JSON array of num_classes strings. */
static int parse_classes(const StFile *f, const char *text, int num_classes, ModelInfo *info) {
    Json j;
    char err[200];
    if (json_parse(text, strlen(text), &j, err, sizeof err)) {
        rn_set_error("%s: metadata \"classes\": bad JSON: %s", f->path, err);
        return -1;
    }
    int rc = 0;
    if (j.type != J_ARRAY || j.n != num_classes) {
        rn_set_error("%s: metadata \"classes\": expected an array of %d names, found %s of %d",
                     f->path, num_classes, json_type_name(j.type), j.n);
        rc = -1;
    }
    for (int i = 0; i < j.n && !rc; i++)
        if (j.items[i].type != J_STRING) {
            rn_set_error("%s: metadata \"classes\"[%d]: expected a string, found %s", f->path, i,
                         json_type_name(j.items[i].type));
            rc = -1;
        }
    if (!rc) {
        info->class_names = rn_realloc(NULL, ((size_t)num_classes + 1) * sizeof(char *));
        for (int i = 0; i < num_classes; i++) info->class_names[i] = rn_strdup(j.items[i].str);
    }
    json_free(&j);
    return rc;
}

Net *model_load(const char *path, ModelInfo *info) {
    StFile f;
    memset(info, 0, sizeof *info);
    if (st_open(path, &f)) return NULL;
    Net *net = model_load_st(&f, info);
    st_close(&f);
    return net;
}

int model_read_info_st(const StFile *fp, ModelInfo *info) {
    const StFile f = *fp;
    const char *path = f.path;
    memset(info, 0, sizeof *info);
    const char *fmt = st_meta(&f, "format");
    const char *arch = st_meta(&f, "arch"), *head = st_meta(&f, "head");
    const char *prep = st_meta(&f, "preprocess"), *classes = st_meta(&f, "classes");
    long long num_classes, img_size;
    float crop_pct;
    /* a checkpoint saved with the model's metadata loads as a model too */
    if (!fmt || (strcmp(fmt, MODEL_FORMAT) != 0 && strcmp(fmt, CHECKPOINT_FORMAT) != 0)) {
        rn_set_error("%s: metadata \"format\": expected \"%s\", found %s%s%s (not a resnet-c "
                     "model file)",
                     path, MODEL_FORMAT, fmt ? "\"" : "", fmt ? fmt : "nothing", fmt ? "\"" : "");
        goto fail;
    }
    const char *absent = !arch      ? "arch"
                         : !head    ? "head"
                         : !prep    ? "preprocess"
                         : !classes ? "classes"
                                    : NULL;
    if (absent) {
        rn_set_error("%s: metadata \"%s\" is missing", path, absent);
        goto fail;
    }
    if (strlen(arch) >= sizeof info->arch) {
        rn_set_error("%s: metadata \"arch\": name too long (%zu characters)", path, strlen(arch));
        goto fail;
    }
    snprintf(info->arch, sizeof info->arch, "%s", arch);
    if (meta_int(&f, "num_classes", 1, 1000000, &num_classes) ||
        meta_int(&f, "img_size", 16, RN_MAX_IMAGE_SIDE, &img_size) ||
        meta_float(&f, "crop_pct", &crop_pct))
        goto fail;
    if (!(crop_pct > 0.0f && crop_pct <= 1.0f)) {
        rn_set_error("%s: metadata \"crop_pct\": expected a value in (0, 1], found %g", path,
                     (double)crop_pct);
        goto fail;
    }
    info->num_classes = (int)num_classes;
    info->prep.size = (int)img_size;
    info->prep.crop_pct = crop_pct;
    if (prep_parse(prep, &info->prep.kind)) {
        rn_set_error("%s: metadata \"preprocess\": unknown convention \"%s\"", path, prep);
        goto fail;
    }
    if (head_parse(head, &info->head)) {
        char why[512];
        snprintf(why, sizeof why, "%s", rn_error());
        rn_set_error("%s: metadata \"head\": %s", path, why);
        goto fail;
    }
    if (parse_classes(&f, classes, info->num_classes, info)) goto fail;
    const char *training = st_meta(&f, "training");
    if (training) info->training = rn_strdup(training);
    return 0;
fail:
    model_info_free(info);
    return -1;
}

Net *model_load_net_st(const StFile *fp, const ModelInfo *info) {
    const StFile f = *fp;
    const char *path = f.path;
    /* the file is checked against the network its metadata describes before that network
     * is built: a 216-byte file claiming "mlp:65536,16384" fails here, not after 4 GB */
    Net *net = resnet_describe(info->arch, info->num_classes, &info->head);
    if (!net) {
        char why[512];
        snprintf(why, sizeof why, "%s", rn_error());
        rn_set_error("%s: metadata \"arch\": %s", path, why);
        goto fail;
    }
    /* files written before freeze groups were stored lack them; others must agree */
    const char *groups = st_meta(&f, "freeze_groups");
    if (groups) {
        Buf built = {0};
        net_groups_json(net, &built);
        int same = strcmp(groups, built.data) == 0;
        if (!same)
            rn_set_error("%s: metadata \"freeze_groups\": the file says %s, %s has %s", path,
                         groups, info->arch, built.data);
        buf_free(&built);
        if (!same) goto fail;
    }
    int bad = net_check_weights(net, &f, 0);
    net_free(net);
    net = NULL;
    if (bad) goto fail;
    net = resnet_create_for_loading(info->arch, info->num_classes, &info->head);
    if (!net) goto fail;
    if (net_load_weights_st(net, &f, 0)) goto fail;
    return net;
fail:
    if (net) net_free(net);
    return NULL;
}

Net *model_load_st(const StFile *f, ModelInfo *info) {
    if (model_read_info_st(f, info)) return NULL;
    Net *net = model_load_net_st(f, info);
    if (!net) model_info_free(info);
    return net;
}
