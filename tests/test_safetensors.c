/* tests/test_safetensors.c - safetensors parser and writer, weights by name, checkpoints,
 * model files. Small networks are built by hand so the loader is tested on its own; the
 * model-file test uses resnet_create. */
#include "resnet.h"
#include "test.h"

#include <stdint.h>
#include <unistd.h>

static char tmp_dir[256];

static const char *tmp_path(const char *name) {
    static char p[512];
    if (!tmp_dir[0]) {
        snprintf(tmp_dir, sizeof tmp_dir, "/tmp/rn_test_safetensors_%ld", (long)getpid());
        mkdir_p(tmp_dir);
    }
    snprintf(p, sizeof p, "%s/%s", tmp_dir, name);
    return p;
}

static int contains(const char *s, const char *part) { return strstr(s, part) != NULL; }

/* A file image: u64 header length, the header, then data_len bytes 0, 1, 2, ... */
static uint8_t *make_file(const char *header, size_t data_len, size_t *len) {
    size_t n = strlen(header);
    *len = 8 + n + data_len;
    uint8_t *b = malloc(*len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, header, n);
    for (size_t i = 0; i < data_len; i++) b[8 + n + i] = (uint8_t)i;
    return b;
}

/* Parse header + data that must be rejected; the error must name the file and contain
 * each of the given parts (the tensor name, what is wrong). */
static void expect_bad(const char *header, size_t data_len, const char *part1, const char *part2) {
    size_t len;
    uint8_t *b = make_file(header, data_len, &len);
    StFile f;
    rn_set_error("%s", "");
    int rc = st_parse(b, len, "bad.safetensors", &f);
    CHECK_MSG(rc == -1, "accepted: %s", header);
    if (rc == -1) {
        const char *e = rn_error();
        CHECK_MSG(contains(e, "bad.safetensors"), "no file name in: %s", e);
        CHECK_MSG(!part1 || contains(e, part1), "'%s' not in: %s", part1, e);
        CHECK_MSG(!part2 || contains(e, part2), "'%s' not in: %s", part2, e);
    } else {
        st_close(&f);
    }
    free(b);
}

static void test_roundtrip(void) {
    const float a[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    const int64_t a_shape[2] = {2, 3};
    const int64_t ints[4] = {-1, 0, INT64_MAX, INT64_MIN};
    const int64_t i_shape[1] = {4};
    const float scalar = 42.0f;
    const int64_t empty_shape[2] = {0, 5};
    StWriter w;
    st_writer_init(&w);
    st_writer_add_f32(&w, "layer1.0.conv1.weight", 2, a_shape, a);
    st_writer_add_i64(&w, "step", 1, i_shape, ints);
    st_writer_add_f32(&w, "scalar", 0, NULL, &scalar);
    st_writer_add_f32(&w, "empty", 2, empty_shape, NULL);
    st_writer_add_f32(&w, "quo\"te\\name \xc3\xa9", 0, NULL, &scalar);
    st_writer_meta(&w, "note", "line1\nline2\t\"quoted\" back\\slash \xc3\xa9 \x01");
    st_writer_meta(&w, "empty", "");
    st_writer_meta(&w, "note2", "first");
    st_writer_meta(&w, "note2", "second"); /* the last value wins */
    const char *path = tmp_path("roundtrip.safetensors");
    CHECK(st_writer_save(&w, path) == 0);
    st_writer_free(&w);

    size_t len;
    uint8_t *raw = read_file(path, &len);
    CHECK(raw != NULL);
    if (!raw) return;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | raw[i];
    CHECK((8 + n) % 8 == 0); /* header padded to keep the data aligned */
    CHECK(raw[8] == '{' && raw[8 + n - 1] == ' ' ? 1 : raw[8 + n - 1] == '}');
    free(raw);

    StFile f;
    CHECK(st_open(path, &f) == 0);
    if (f.n_tensors != 5) {
        CHECK(f.n_tensors == 5);
        st_close(&f);
        return;
    }
    CHECK(strcmp(f.tensors[0].name, "layer1.0.conv1.weight") == 0); /* insertion order */
    CHECK(strcmp(f.tensors[1].name, "step") == 0);
    CHECK(strcmp(f.tensors[4].name, "quo\"te\\name \xc3\xa9") == 0);
    const StTensor *t = st_find(&f, "layer1.0.conv1.weight");
    CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    float back[6];
    CHECK(t && st_read_f32(&f, t, back) == 0);
    CHECK(t && memcmp(back, a, sizeof a) == 0);
    t = st_find(&f, "step");
    CHECK(t && t->dtype == ST_I64 && strcmp(t->dtype_name, "I64") == 0);
    uint8_t ints_le[32];
    rn_le_store(ints_le, ints, 4, 8);
    CHECK(t && t->end - t->begin == 32 && memcmp(f.data + t->begin, ints_le, 32) == 0);
    CHECK(t && st_read_f32(&f, t, back) == -1 && contains(rn_error(), "'step'"));
    t = st_find(&f, "scalar");
    CHECK(t && t->ndim == 0 && st_read_f32(&f, t, back) == 0 && back[0] == 42.0f);
    t = st_find(&f, "empty");
    CHECK(t && t->begin == t->end && t->shape[0] == 0);
    CHECK(st_find(&f, "missing") == NULL);
    const char *note = st_meta(&f, "note");
    CHECK(note && strcmp(note, "line1\nline2\t\"quoted\" back\\slash \xc3\xa9 \x01") == 0);
    CHECK(st_meta(&f, "empty") && st_meta(&f, "empty")[0] == 0);
    CHECK(st_meta(&f, "note2") && strcmp(st_meta(&f, "note2"), "second") == 0);
    CHECK(f.n_meta == 3);
    CHECK(st_meta(&f, "absent") == NULL);
    st_close(&f);

    /* an empty file: no tensors, no metadata */
    st_writer_init(&w);
    CHECK(st_writer_save(&w, path) == 0);
    st_writer_free(&w);
    CHECK(st_open(path, &f) == 0 && f.n_tensors == 0 && f.n_meta == 0);
    st_close(&f);
    CHECK(st_open(tmp_path("does-not-exist.safetensors"), &f) == -1);
    CHECK(contains(rn_error(), "does-not-exist.safetensors"));
}

/* Hand-written headers in the format other writers produce: escapes, numbers, spacing. */
static void test_json_features(void) {
    size_t len;
    const char *h = "{ \"__metadata__\" : {\"k\\u00e9y\": \"\\ud83d\\ude00 \\/ \\b\\f\\r\"},\n"
                    "  \"t\\u0041\" : {\"shape\": [1, 2], \"dtype\": \"F32\", "
                    "\"data_offsets\": [0, 8]} }  ";
    uint8_t *b = make_file(h, 8, &len);
    StFile f;
    CHECK(st_parse(b, len, NULL, &f) == 0);
    free(b);
    CHECK(strcmp(f.path, "<memory>") == 0);
    CHECK(st_find(&f, "tA") != NULL);
    const char *v = st_meta(&f, "k\xc3\xa9y");
    CHECK(v && strcmp(v, "\xf0\x9f\x98\x80 / \b\f\r") == 0);
    st_close(&f);
}

static void test_rejects(void) {
    /* truncated: too short for the header length, or a header cut short */
    StFile f;
    const uint8_t five[5] = {1, 0, 0, 0, 0};
    CHECK(st_parse(five, 5, "bad.safetensors", &f) == -1);
    CHECK(contains(rn_error(), "truncated") && contains(rn_error(), "bad.safetensors"));
    size_t len;
    uint8_t *b =
        make_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, &len);
    CHECK(st_parse(b, len - 10 - 4, "bad.safetensors", &f) == -1); /* cut inside the header */
    CHECK(contains(rn_error(), "header length"));
    /* absurd header lengths: larger than the file, 2^63 */
    b[0] = 0xff;
    b[1] = 0xff;
    b[2] = 0xff;
    CHECK(st_parse(b, len, "bad.safetensors", &f) == -1 && contains(rn_error(), "header length"));
    memset(b, 0, 8);
    b[7] = 0x80;
    CHECK(st_parse(b, len, "bad.safetensors", &f) == -1 && contains(rn_error(), "header length"));
    free(b);

    const char *ok = "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":";
    char h[512];
    expect_bad("{\"a\":{\"dtype\":\"F32\",}", 0, "JSON", NULL);
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} x", 4, "JSON",
               "trailing");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[01],\"data_offsets\":[0,4]}}", 4, "JSON",
               NULL);
    expect_bad("{\"a\\q\":{}}", 0, "JSON", "escape");
    expect_bad("{\"\\ud800x\":{}}", 0, "JSON", "surrogate");
    expect_bad("{\"a\xff\":{}}", 0, "UTF-8", NULL);
    expect_bad("{\"a\\u0000b\":{}}", 0, "JSON", "\\u0000");
    expect_bad("[1, 2]", 0, "JSON object", "found an array");
    expect_bad("\"text\"", 0, "JSON object", "found a string");
    expect_bad("{\"w\":[1,2]}", 0, "'w'", "expected an object");
    expect_bad("{\"w\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "'w'",
               "unknown dtype \"F128\"");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 0, "'w'", "missing \"data_offsets\"");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, "'w'",
               "unexpected field \"x\"");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "'w'",
               "non-negative integer, found -1");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "'w'",
               "non-negative");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
               "\"data_offsets\":[0,4]}}",
               4, "'w'", "overflow");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
               4, "'w'", "dimensions");
    /* shape and byte span disagree: [2, 2] F32 is 16 bytes */
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,12]}}", 12, "'w'",
               "span 12 bytes, expected 16");
    expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "'w'",
               "data_offsets");
    snprintf(h, sizeof h, "{\"w\":{%s[0,16]}}", ok);
    expect_bad(h, 8, "'w'", "out of range");
    snprintf(h, sizeof h, "{\"w\":{%s[8,0]}}", ok);
    expect_bad(h, 8, "'w'", "out of range");
    snprintf(h, sizeof h, "{\"w\":{%s[0,8]},\"v\":{%s[4,12]}}", ok, ok);
    expect_bad(h, 12, "'v'", "overlap");
    snprintf(h, sizeof h, "{\"w\":{%s[0,8]},\"v\":{%s[12,20]}}", ok, ok);
    expect_bad(h, 20, "'v'", "gap of 4 bytes");
    snprintf(h, sizeof h, "{\"w\":{%s[4,12]}}", ok);
    expect_bad(h, 12, "'w'", "gap");
    snprintf(h, sizeof h, "{\"w\":{%s[0,8]}}", ok);
    expect_bad(h, 12, "unused bytes", NULL);
    snprintf(h, sizeof h, "{\"w\":{%s[0,8]},\"w\":{%s[8,16]}}", ok, ok);
    expect_bad(h, 16, "'w'", "duplicate");
    expect_bad("{\"__metadata__\":{\"a\":{\"b\":\"c\"}}}", 0, "__metadata__ \"a\"",
               "found an object");
    expect_bad("{\"__metadata__\":{\"epochs\":3}}", 0, "__metadata__ \"epochs\"",
               "expected a string");
    expect_bad("{\"__metadata__\":[]}", 0, "__metadata__", "expected an object");
    expect_bad("{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0, "duplicate key \"a\"", NULL);
    /* deep nesting is refused, not a stack overflow */
    char deep[300] = "{\"__metadata__\":";
    for (int i = 0; i < 200; i++) strcat(deep, "[");
    expect_bad(deep, 0, "nesting too deep", NULL);

    /* a valid file still parses after all that (no stale state) */
    snprintf(h, sizeof h, "{\"w\":{%s[0,8]},\"v\":{%s[8,16]}}", ok, ok);
    b = make_file(h, 16, &len);
    CHECK(st_parse(b, len, "good", &f) == 0 && f.n_tensors == 2);
    st_close(&f);
    free(b);
}

static void test_f16_bf16(void) {
    /* half bit patterns and their exact values */
    const uint16_t f16[12] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400,
                              0x8000, 0x3555, 0x7c00, 0xfc00, 0x7e00, 0x8001};
    const uint16_t bf16[5] = {0x3f80, 0xc049, 0x7f80, 0x0001, 0xff81};
    const double f64[2] = {0.1, -1e300};
    char h[512];
    snprintf(h, sizeof h,
             "{\"h\":{\"dtype\":\"F16\",\"shape\":[12],\"data_offsets\":[0,24]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[5],\"data_offsets\":[24,34]},"
             "\"d\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[34,50]}}");
    size_t len;
    uint8_t *buf = make_file(h, 50, &len);
    uint8_t *data = buf + len - 50;
    for (int i = 0; i < 12; i++) {
        data[2 * i] = f16[i] & 0xff;
        data[2 * i + 1] = f16[i] >> 8;
    }
    for (int i = 0; i < 5; i++) {
        data[24 + 2 * i] = bf16[i] & 0xff;
        data[25 + 2 * i] = bf16[i] >> 8;
    }
    rn_le_store(data + 34, f64, 2, 8);
    StFile f;
    CHECK(st_parse(buf, len, "half", &f) == 0);
    free(buf);
    float x[12];
    CHECK(st_read_f32(&f, st_find(&f, "h"), x) == 0);
    CHECK(x[0] == 1.0f && x[1] == -2.0f && x[2] == 65504.0f);
    CHECK(x[3] == ldexpf(1.0f, -24));           /* smallest subnormal */
    CHECK(x[4] == 1023.0f * ldexpf(1.0f, -24)); /* largest subnormal */
    CHECK(x[5] == ldexpf(1.0f, -14));           /* smallest normal */
    CHECK(x[6] == 0.0f && signbit(x[6]));
    CHECK(x[7] == 0.333251953125f);
    CHECK(isinf(x[8]) && x[8] > 0 && isinf(x[9]) && x[9] < 0 && isnan(x[10]));
    CHECK(x[11] == -ldexpf(1.0f, -24));
    CHECK(st_read_f32(&f, st_find(&f, "b"), x) == 0);
    CHECK(x[0] == 1.0f && x[1] == -3.140625f && isinf(x[2]));
    CHECK(x[3] == ldexpf(1.0f, -133) && isnan(x[4]));
    CHECK(st_read_f32(&f, st_find(&f, "d"), x) == 0);
    CHECK(x[0] == (float)0.1 && /* the cast: FLT_EVAL_METHOD 1 keeps 0.1f a double */
          isinf(x[1]) && x[1] < 0);
    st_close(&f);
}

/* Random byte edits and truncations of a valid file: each is accepted or rejected with a
 * message, never a crash (run under -fsanitize=address to see more). */
static void test_mutations(void) {
    const float a[6] = {1, 2, 3, 4, 5, 6};
    const int64_t shape[2] = {2, 3}, s1[1] = {2};
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "k\u00e9y", "v\"al\\ue");
    st_writer_add_f32(&w, "a.weight", 2, shape, a);
    st_writer_add_f32(&w, "b\u2603", 1, s1, a);
    const char *path = tmp_path("mut.safetensors");
    CHECK(st_writer_save(&w, path) == 0);
    st_writer_free(&w);
    size_t len;
    uint8_t *orig = read_file(path, &len), *buf = malloc(len);
    Rng r;
    rng_seed(&r, 5);
    int rejected = 0, accepted = 0;
    const char edits[] = "{}[]\",:0123456789-.eE\\u \x01\xff";
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, orig, len);
        size_t n = len;
        int kind = (int)rng_below(&r, 3);
        if (kind == 0)
            n = rng_below(&r, (uint32_t)len); /* truncate */
        else
            for (int k = 0; k < 1 + (int)rng_below(&r, 3); k++) {
                size_t at = rng_below(&r, (uint32_t)(len - 24)); /* mostly the header */
                buf[at] = kind == 1 ? (uint8_t)edits[rng_below(&r, sizeof edits - 1)]
                                    : (uint8_t)rng_next(&r);
            }
        StFile f;
        if (st_parse(buf, n, "mut", &f) == 0) {
            accepted++;
            for (int t = 0; t < f.n_tensors; t++) CHECK(f.tensors[t].end <= f.data_len);
            st_close(&f);
        } else {
            rejected++;
            CHECK(strncmp(rn_error(), "mut: ", 5) == 0);
        }
    }
    CHECK(rejected > 1000 && accepted > 0);
    free(orig);
    free(buf);
}

/* ---------------------------------------------------------------- hand-built networks */

static void add_param(Net *net, const char *name, int ndim, const int64_t *shape, int stage,
                      int is_buffer, float fill) {
    Param *p = &net->params[net->n_params++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->ndim = ndim;
    p->numel = 1;
    for (int i = 0; i < ndim; i++) {
        p->shape[i] = shape[i];
        p->numel *= shape[i];
    }
    p->data = rn_calloc((size_t)p->numel, sizeof(float));
    if (!is_buffer) p->grad = rn_calloc((size_t)p->numel, sizeof(float));
    for (int64_t i = 0; i < p->numel; i++) p->data[i] = fill + 0.25f * (float)i;
    p->is_buffer = is_buffer;
    p->stage = stage;
}

/* conv1 [4, 3, 1, 1], bn1 (weight, bias, running stats), fc [classes, 4] */
static Net *tiny_net(int classes, float fill) {
    Net *net = calloc(1, sizeof *net);
    snprintf(net->arch, sizeof net->arch, "tiny");
    net->num_classes = classes;
    net->params = calloc(8, sizeof(Param));
    net->cap_params = 8;
    const int64_t conv[4] = {4, 3, 1, 1}, c4[1] = {4}, fc[2] = {classes, 4}, fcb[1] = {classes};
    add_param(net, "conv1.weight", 4, conv, STAGE_STEM, 0, fill);
    add_param(net, "bn1.weight", 1, c4, STAGE_STEM, 0, fill + 1);
    add_param(net, "bn1.bias", 1, c4, STAGE_STEM, 0, fill + 2);
    add_param(net, "bn1.running_mean", 1, c4, STAGE_STEM, 1, fill + 3);
    add_param(net, "bn1.running_var", 1, c4, STAGE_STEM, 1, fill + 4);
    add_param(net, "fc.weight", 2, fc, STAGE_HEAD, 0, fill + 5);
    add_param(net, "fc.bias", 1, fcb, STAGE_HEAD, 0, fill + 6);
    net->n_groups = STAGE_HEAD + 1;
    rng_seed(&net->rng, 99);
    return net;
}

static void tiny_free(Net *net) {
    for (int i = 0; i < net->n_params; i++) {
        rn_free(net->params[i].data);
        rn_free(net->params[i].grad);
    }
    free(net->params);
    free(net);
}

static int same_params(const Net *a, const Net *b) {
    if (a->n_params != b->n_params) return 0;
    for (int i = 0; i < a->n_params; i++)
        if (memcmp(a->params[i].data, b->params[i].data, (size_t)a->params[i].numel * 4)) return 0;
    return 1;
}

static void test_net_weights(void) {
    Net *a = tiny_net(3, 1.0f), *b = tiny_net(3, -7.0f);
    const char *keys[1] = {"arch"}, *vals[1] = {"tiny"};
    const char *path = tmp_path("tiny.safetensors");
    CHECK(net_save_weights(a, path, keys, vals, 1) == 0);
    CHECK(!same_params(a, b));
    CHECK(net_load_weights(b, path, 0) == 0);
    CHECK(same_params(a, b)); /* parameters and BN running statistics, bit for bit */

    /* a state dict as torch writes it: extra num_batches_tracked, any order */
    StWriter w;
    st_writer_init(&w);
    const int64_t one[1] = {1}, nbt = 5;
    st_writer_add_i64(&w, "bn1.num_batches_tracked", 0, one, &nbt);
    for (int i = a->n_params - 1; i >= 0; i--)
        st_writer_add_f32(&w, a->params[i].name, a->params[i].ndim, a->params[i].shape,
                          a->params[i].data);
    CHECK(st_writer_save(&w, path) == 0);
    st_writer_free(&w);
    Net *c = tiny_net(3, 0.0f);
    CHECK(net_load_weights(c, path, 0) == 0 && same_params(a, c));
    tiny_free(c);

    /* missing and unexpected tensors are listed by name */
    st_writer_init(&w);
    for (int i = 0; i < a->n_params; i++)
        if (strcmp(a->params[i].name, "bn1.running_var") != 0)
            st_writer_add_f32(&w, a->params[i].name, a->params[i].ndim, a->params[i].shape,
                              a->params[i].data);
    CHECK(st_writer_save(&w, path) == 0);
    CHECK(net_load_weights(b, path, 0) == -1);
    CHECK(contains(rn_error(), "bn1.running_var") && contains(rn_error(), "missing"));
    st_writer_add_f32(&w, "bn1.running_var", 1, one, &a->params[0].data[0]);
    CHECK(st_writer_save(&w, path) == 0);
    CHECK(net_load_weights(b, path, 0) == -1);
    CHECK(contains(rn_error(), "'bn1.running_var'") &&
          contains(rn_error(), "file has [1], model needs [4]"));
    st_writer_free(&w);
    st_writer_init(&w);
    for (int i = 0; i < a->n_params; i++)
        st_writer_add_f32(&w, a->params[i].name, a->params[i].ndim, a->params[i].shape,
                          a->params[i].data);
    st_writer_add_f32(&w, "layer9.weight", 1, one, &a->params[0].data[0]);
    CHECK(st_writer_save(&w, path) == 0);
    st_writer_free(&w);
    float before = b->params[0].data[0];
    b->params[0].data[0] = 123.0f;
    CHECK(net_load_weights(b, path, 0) == -1);
    CHECK(contains(rn_error(), "unexpected") && contains(rn_error(), "layer9.weight"));
    CHECK(b->params[0].data[0] == 123.0f); /* a failed load leaves the network untouched */
    b->params[0].data[0] = before;
    tiny_free(a);
    tiny_free(b);
}

/* resnet_create_for_loading: the same network as resnet_create with its random parts left
 * 0 (and only those: batch norm starts as torchvision's), and once every tensor is loaded,
 * the same parameters bit for bit. */
static void test_create_for_loading(void) {
    const char *archs[] = {"resnet18", "efficientnet_b0"};
    for (int t = 0; t < 2; t++) {
        Net *a = resnet_create(archs[t], 7, NULL, 5), *b = resnet_create_for_loading(archs[t], 7, NULL);
        CHECK(a && b && a->n_params == b->n_params && a->n_nodes == b->n_nodes);
        int zero_convs = 1, same_bn = 1;
        for (int i = 0; i < b->n_params; i++) {
            const Param *p = &b->params[i];
            CHECK(!strcmp(p->name, a->params[i].name) && p->numel == a->params[i].numel);
            for (int64_t k = 0; p->ndim >= 2 && k < p->numel; k++) zero_convs &= p->data[k] == 0;
        }
        for (int i = 0; i < b->n_nodes; i++) {
            const Node *nd = &b->nodes[i];
            if (nd->op != OP_BN) continue;
            const int ps[4] = {nd->weight, nd->bias, nd->mean, nd->var};
            for (int j = 0; j < 4; j++)
                same_bn &= !memcmp(b->params[ps[j]].data, a->params[ps[j]].data,
                                   (size_t)b->params[ps[j]].numel * 4);
        }
        CHECK_MSG(zero_convs, "%s: a weight was drawn", archs[t]);
        CHECK_MSG(same_bn, "%s: batch norm differs from resnet_create's", archs[t]);
        const char *path = tmp_path("for_loading.safetensors");
        CHECK(net_save_weights(a, path, NULL, NULL, 0) == 0);
        CHECK(net_load_weights(b, path, 0) == 0);
        CHECK(same_params(a, b));
        net_free(a);
        net_free(b);
    }
}

static void test_new_head(void) {
    /* a "stock" 10-class file into a 2-class model */
    Net *stock = tiny_net(10, 1.0f), *mine = tiny_net(2, -3.0f), *fresh = tiny_net(2, -3.0f);
    const char *path = tmp_path("stock.safetensors");
    CHECK(net_save_weights(stock, path, NULL, NULL, 0) == 0);
    CHECK(net_load_weights(mine, path, 0) == -1);
    CHECK(contains(rn_error(), "'fc.weight'") &&
          contains(rn_error(), "file has [10, 4], model needs [2, 4]"));
    CHECK(net_load_weights(mine, path, 1) == 0);
    for (int i = 0; i < mine->n_params; i++) {
        const Param *p = &mine->params[i];
        const Param *want = p->stage == STAGE_HEAD ? &fresh->params[i] : &stock->params[i];
        CHECK_MSG(memcmp(p->data, want->data, (size_t)p->numel * 4) == 0, "%s", p->name);
    }
    /* same-shape heads load normally with allow_new_head */
    Net *again = tiny_net(10, 0.0f);
    CHECK(net_load_weights(again, path, 1) == 0 && same_params(again, stock));
    tiny_free(again);
    /* a replaced head does not excuse backbone mismatches or other strangers */
    StWriter w;
    st_writer_init(&w);
    for (int i = 0; i < stock->n_params; i++)
        if (strcmp(stock->params[i].name, "fc.bias") != 0)
            st_writer_add_f32(&w, stock->params[i].name, stock->params[i].ndim,
                              stock->params[i].shape, stock->params[i].data);
    const int64_t one[1] = {1};
    st_writer_add_f32(&w, "layer9.weight", 1, one, stock->params[0].data);
    CHECK(st_writer_save(&w, path) == 0);
    st_writer_free(&w);
    CHECK(net_load_weights(mine, path, 1) == -1 && contains(rn_error(), "layer9.weight"));
    tiny_free(stock);
    tiny_free(mine);
    tiny_free(fresh);
}

/* The "bn_eps" metadata: written where a net's backbone batch norms differ from what its
 * architecture builds (a tf.keras ResNet50's 1.001e-5), applied on load, refused when it
 * is not a number in (0, 1). */
static void test_bn_eps_metadata(void) {
    Net *a = resnet_create("cifar_resnet20", 10, NULL, 1),
        *b = resnet_create("cifar_resnet20", 10, NULL, 2);
    const char *path = tmp_path("eps.safetensors");
    CHECK(net_save_weights(a, path, NULL, NULL, 0) == 0);
    StFile f;
    CHECK(st_open(path, &f) == 0 && st_meta(&f, "bn_eps") == NULL); /* stock: not written */
    st_close(&f);
    for (int i = 0; i < a->n_nodes; i++)
        if (a->nodes[i].op == OP_BN) a->nodes[i].eps = 1e-3f;
    CHECK(net_save_weights(a, path, NULL, NULL, 0) == 0);
    CHECK(st_open(path, &f) == 0 && st_meta(&f, "bn_eps") &&
          strcmp(st_meta(&f, "bn_eps"), "0.001") == 0);
    st_close(&f);
    CHECK(net_load_weights(b, path, 0) == 0);
    int bns = 0, applied = 0;
    for (int i = 0; i < b->n_nodes; i++)
        if (b->nodes[i].op == OP_BN) {
            bns++;
            applied += FLOAT_EQ(b->nodes[i].eps, 1e-3f);
        }
    CHECK(bns > 0 && applied == bns);
    const char *keys[] = {"bn_eps"}, *bad[] = {"1.5", "x", ""};
    for (int k = 0; k < 3; k++) {
        StWriter w;
        st_writer_init(&w);
        st_writer_meta(&w, keys[0], bad[k]);
        for (int i = 0; i < a->n_params; i++)
            st_writer_add_f32(&w, a->params[i].name, a->params[i].ndim, a->params[i].shape,
                              a->params[i].data);
        CHECK(st_writer_save(&w, path) == 0);
        st_writer_free(&w);
        CHECK(net_load_weights(b, path, 0) == -1 && contains(rn_error(), "bn_eps"));
    }
    net_free(a);
    net_free(b);
}

static void test_f16_weights(void) {
    /* a float16 state dict loads into float32 parameters */
    Net *net = tiny_net(3, 0.0f);
    Buf header = {0}, data = {0};
    buf_put(&header, "{", 1);
    for (int i = 0; i < net->n_params; i++) {
        const Param *p = &net->params[i];
        size_t begin = data.len;
        for (int64_t k = 0; k < p->numel; k++) {
            uint16_t hv = (uint16_t)(0x3c00 + 0x100 * i + k); /* 1.0 + small steps */
            uint8_t le[2] = {(uint8_t)(hv & 0xff), (uint8_t)(hv >> 8)};
            buf_put(&data, le, 2);
        }
        buf_printf(&header, "%s\"%s\":{\"dtype\":\"F16\",\"shape\":[", i ? "," : "", p->name);
        for (int d = 0; d < p->ndim; d++)
            buf_printf(&header, "%s%lld", d ? "," : "", (long long)p->shape[d]);
        buf_printf(&header, "],\"data_offsets\":[%zu,%zu]}", begin, data.len);
    }
    buf_put(&header, "}", 1);
    size_t len;
    uint8_t *file = make_file(header.data, data.len, &len);
    memcpy(file + len - data.len, data.data, data.len);
    StFile f;
    CHECK(st_parse(file, len, "half-weights", &f) == 0);
    CHECK(net_load_weights_st(net, &f, 0) == 0);
    st_close(&f);
    /* half 0x3c00 + s (s < 1024) is 1 + s / 1024 */
    CHECK(net->params[0].data[0] == 1.0f && net->params[0].data[5] == 1.0f + 5.0f / 1024);
    CHECK(net->params[2].data[3] == 1.0f + (0x200 + 3) / 1024.0f);
    free(file);
    buf_free(&header);
    buf_free(&data);
    tiny_free(net);
}

/* Deterministic fake gradients: a function of the parameters, so the run is a chain. */
static void fake_grads(Net *net, int step) {
    for (int i = 0; i < net->n_params; i++) {
        Param *p = &net->params[i];
        if (!p->grad) continue;
        for (int64_t k = 0; k < p->numel; k++)
            p->grad[k] = sinf(p->data[k] * 1.7f + (float)(step + k)) * 0.1f;
    }
    /* the "running statistics" move too, and so does the dropout generator */
    net->params[3].data[0] += 0.01f * (float)(rng_next(&net->rng) >> 60);
}

static void run_steps(Net *net, Optimizer *opt, Rng *rng, int from, int to) {
    for (int s = from; s < to; s++) {
        fake_grads(net, s + (int)(rng_next(rng) & 7));
        optimizer_step(opt, net);
    }
}

static void resume_case(OptType type, float momentum) {
    OptConfig cfg = opt_default(type, 0.05f);
    cfg.momentum = momentum;
    cfg.weight_decay = 1e-3f;
    Net *full = tiny_net(3, 0.5f), *half = tiny_net(3, 0.5f), *resumed = tiny_net(3, 9.0f);
    OptConfig other = opt_default(OPT_SGD, 1.0f);
    other.momentum = 0.5f;
    Optimizer *o_res = optimizer_create(resumed, &other);
    Rng r_full, r_half, r_res;
    rng_seed(&r_res, 1234);
    run_steps(resumed, o_res, &r_res, 0, 2); /* stale state, replaced by the load */
    CHECK(o_res->m[6] != NULL);
    /* fc.bias gets no gradient: its state stays NULL and must come back NULL */
    Net *nets[3] = {full, half, resumed};
    for (int i = 0; i < 3; i++) {
        rn_free(nets[i]->params[6].grad);
        nets[i]->params[6].grad = NULL;
    }
    Optimizer *o_full = optimizer_create(full, &cfg), *o_half = optimizer_create(half, &cfg);
    rng_seed(&r_full, 7);
    rng_seed(&r_half, 7);
    run_steps(full, o_full, &r_full, 0, 10);
    run_steps(half, o_half, &r_half, 0, 4);
    const char *keys[2] = {"epoch", "classes"}, *vals[2] = {"4", "[\"a\",\"b\"]"};
    const char *path = tmp_path("ckpt.safetensors");
    CHECK(checkpoint_save(path, half, o_half, &r_half, keys, vals, 2) == 0);
    StFile meta;
    CHECK(checkpoint_load(path, resumed, o_res, &r_res, &meta) == 0);
    CHECK(st_meta(&meta, "epoch") && strcmp(st_meta(&meta, "epoch"), "4") == 0);
    CHECK(st_meta(&meta, "classes") && strcmp(st_meta(&meta, "classes"), "[\"a\",\"b\"]") == 0);
    st_close(&meta);
    CHECK(o_res->step == 4 && o_res->cfg.type == type && o_res->cfg.lr == cfg.lr &&
          o_res->cfg.weight_decay == cfg.weight_decay && o_res->cfg.momentum == cfg.momentum &&
          o_res->cfg.beta2 == cfg.beta2 && o_res->cfg.eps == cfg.eps);
    CHECK(memcmp(&r_res, &r_half, sizeof r_res) == 0);
    CHECK(memcmp(&resumed->rng, &half->rng, sizeof half->rng) == 0);
    run_steps(resumed, o_res, &r_res, 4, 10);
    CHECK(same_params(resumed, full)); /* bit for bit equal to the uninterrupted run */
    for (int i = 0; i < full->n_params; i++) {
        CHECK((o_res->m[i] == NULL) == (o_full->m[i] == NULL));
        CHECK((o_res->v[i] == NULL) == (o_full->v[i] == NULL));
        if (o_res->m[i] && o_full->m[i])
            CHECK(memcmp(o_res->m[i], o_full->m[i], (size_t)full->params[i].numel * 4) == 0);
    }
    optimizer_free(o_full);
    optimizer_free(o_half);
    optimizer_free(o_res);
    tiny_free(full);
    tiny_free(half);
    tiny_free(resumed);
}

static void test_checkpoint_resume(void) {
    resume_case(OPT_SGD, 0.9f);
    resume_case(OPT_ADAM, 0.0f);
    resume_case(OPT_ADAMW, 0.0f);
    /* a weights file is not a checkpoint; a checkpoint loads as weights */
    Net *net = tiny_net(3, 0.0f);
    const char *wpath = tmp_path("w.safetensors"), *cpath = tmp_path("c.safetensors");
    CHECK(net_save_weights(net, wpath, NULL, NULL, 0) == 0);
    CHECK(checkpoint_load(wpath, net, NULL, NULL, NULL) == -1 && contains(rn_error(), "format"));
    OptConfig cfg = opt_default(OPT_ADAM, 1e-3f);
    Optimizer *opt = optimizer_create(net, &cfg);
    Rng rng;
    rng_seed(&rng, 1);
    fake_grads(net, 0);
    optimizer_step(opt, net);
    CHECK(checkpoint_save(cpath, net, opt, &rng, NULL, NULL, 0) == 0);
    Net *other = tiny_net(3, 5.0f);
    CHECK(net_load_weights(other, cpath, 0) == 0 && same_params(net, other));
    /* optimizer state for a parameter the net lacks is an error */
    Net *smaller = tiny_net(2, 0.0f);
    Optimizer *o2 = optimizer_create(smaller, &cfg);
    CHECK(checkpoint_load(cpath, smaller, o2, NULL, NULL) == -1 &&
          contains(rn_error(), "fc.weight"));
    optimizer_free(o2);
    optimizer_free(opt);
    tiny_free(smaller);
    tiny_free(other);
    tiny_free(net);
}

static void test_model_file(void) {
    Net *net = resnet_create("cifar_resnet20", 3, NULL, 5);
    if (!net) {
        CHECK_MSG(0, "resnet_create: %s", rn_error());
        return;
    }
    char *names[3] = {"cat", "dog \"big\"", "\xc3\xa9l\xc3\xa9phant"};
    ModelInfo info;
    memset(&info, 0, sizeof info);
    snprintf(info.arch, sizeof info.arch, "cifar_resnet20");
    info.num_classes = 3;
    info.class_names = names;
    CHECK(head_parse("linear", &info.head) == 0);
    info.prep.kind = PREP_UNIT;
    info.prep.size = 32;
    info.prep.crop_pct = 0.875f;
    const char *path = tmp_path("model.safetensors");
    CHECK(model_save(path, net, &info) == 0);
    StFile f;
    CHECK(st_open(path, &f) == 0);
    CHECK(st_meta(&f, "format") && strcmp(st_meta(&f, "format"), "resnet-c-model") == 0);
    CHECK(st_meta(&f, "classes") &&
          strcmp(st_meta(&f, "classes"),
                 "[\"cat\",\"dog \\\"big\\\"\",\"\xc3\xa9l\xc3\xa9phant\"]") == 0);
    CHECK(st_meta(&f, "num_classes") && strcmp(st_meta(&f, "num_classes"), "3") == 0);
    CHECK(st_meta(&f, "img_size") && strcmp(st_meta(&f, "img_size"), "32") == 0);
    CHECK(st_meta(&f, "crop_pct") && strcmp(st_meta(&f, "crop_pct"), "0.875") == 0);
    CHECK(st_meta(&f, "preprocess") &&
          strcmp(st_meta(&f, "preprocess"), prep_name(PREP_UNIT)) == 0);
    CHECK(st_find(&f, "linear.weight") != NULL && st_find(&f, "layer3.2.bn2.running_var") != NULL);
    st_close(&f);
    ModelInfo back;
    Net *loaded = model_load(path, &back);
    CHECK_MSG(loaded != NULL, "%s", rn_error());
    if (loaded) {
        CHECK(strcmp(back.arch, "cifar_resnet20") == 0 && back.num_classes == 3);
        CHECK(back.class_names && strcmp(back.class_names[1], "dog \"big\"") == 0 &&
              strcmp(back.class_names[2], names[2]) == 0);
        CHECK(back.prep.kind == PREP_UNIT && back.prep.size == 32 && back.prep.crop_pct == 0.875f);
        CHECK(back.head.type == HEAD_LINEAR);
        CHECK(same_params(loaded, net));
        /* and it computes the same function */
        float x[2 * 3 * 32 * 32], y0[2 * 3];
        hash_fill(x, sizeof x / sizeof x[0], 3, 1.0f);
        CHECK(net_plan(net, 2, 32, 32, 0) == 0 && net_plan(loaded, 2, 32, 32, 0) == 0);
        memcpy(y0, net_forward(net, x, 2, 0), sizeof y0);
        CHECK(max_rel_diff(net_forward(loaded, x, 2, 0), y0, 6, 1e-6) == 0.0);
        net_free(loaded);
        model_info_free(&back);
        CHECK(back.class_names == NULL);
    }
    /* a plain weights file is not a model file */
    CHECK(net_save_weights(net, path, NULL, NULL, 0) == 0);
    CHECK(model_load(path, &back) == NULL && contains(rn_error(), "format"));
    net_free(net);
}

/* One NaN or infinity in a file is refused with the tensor's name and the element's index,
 * whatever loads it (weights, checkpoints' weights and optimizer state), and the network
 * is left as it was. */
static void test_non_finite_refused(void) {
    Net *a = tiny_net(3, 1.0f), *b = tiny_net(3, -7.0f);
    const char *path = tmp_path("nonfinite.safetensors");
    a->params[0].data[2] = INFINITY;
    CHECK(net_save_weights(a, path, NULL, NULL, 0) == 0);
    CHECK(net_load_weights(b, path, 0) == -1);
    CHECK_MSG(contains(rn_error(), "tensor 'conv1.weight' [4, 3, 1, 1]: element 2 is infinity"),
              "%s", rn_error());
    CHECK(b->params[0].data[0] == -7.0f);
    a->params[0].data[2] = 1.0f;
    a->params[6].data[1] = NAN;
    CHECK(net_save_weights(a, path, NULL, NULL, 0) == 0);
    CHECK(net_load_weights(b, path, 0) == -1);
    CHECK_MSG(contains(rn_error(), "'fc.bias' [3]: element 1 is NaN"), "%s", rn_error());
    a->params[6].data[1] = 0.5f;
    /* optimizer moments, and hyper-parameters, of a checkpoint */
    OptConfig cfg = opt_default(OPT_ADAM, 1e-3f);
    Optimizer *opt = optimizer_create(a, &cfg);
    fake_grads(a, 0);
    optimizer_step(opt, a);
    opt->v[5][3] = -INFINITY;
    CHECK(checkpoint_save(path, a, opt, NULL, NULL, NULL, 0) == 0);
    Optimizer *o2 = optimizer_create(b, &cfg);
    CHECK(checkpoint_load(path, b, o2, NULL, NULL) == -1);
    CHECK_MSG(contains(rn_error(), "'optim.v.fc.weight' [3, 4]: element 3 is -infinity"), "%s",
              rn_error());
    opt->v[5][3] = 0.0f;
    opt->cfg.lr = NAN;
    CHECK(checkpoint_save(path, a, opt, NULL, NULL, NULL, 0) == 0);
    CHECK(checkpoint_load(path, b, o2, NULL, NULL) == -1);
    CHECK_MSG(contains(rn_error(), "\"optim.lr\": expected a finite number"), "%s", rn_error());
    optimizer_free(opt);
    optimizer_free(o2);
    tiny_free(a);
    tiny_free(b);
}

/* A model file's metadata describes a network; the file is checked against it before it
 * is built: a 216-byte file claiming a 4 GB head fails at once, without the memory. */
static void test_model_checked_before_built(void) {
    StWriter w;
    st_writer_init(&w);
    const char *meta[][2] = {{"format", "resnet-c-model"}, {"arch", "resnet18"},
                             {"num_classes", "2"},         {"classes", "[\"a\",\"b\"]"},
                             {"head", "mlp:65536,16384"},  {"preprocess", "torchvision"},
                             {"img_size", "224"},          {"crop_pct", "0.875"}};
    for (int i = 0; i < 8; i++) st_writer_meta(&w, meta[i][0], meta[i][1]);
    const char *path = tmp_path("huge_head.safetensors");
    CHECK(st_writer_save(&w, path) == 0);
    st_writer_free(&w);
    long rss0 = rn_peak_rss_kb();
    double t0 = rn_seconds();
    ModelInfo info;
    CHECK(model_load(path, &info) == NULL);
    CHECK_MSG(contains(rn_error(), "missing from the file") && contains(rn_error(), "conv1.weight"),
              "%s", rn_error());
    double dt = rn_seconds() - t0;
    long grew_mb = (rn_peak_rss_kb() - rss0) / 1024;
    CHECK_MSG(dt < 2.0 && grew_mb < 256, "%.2f s, peak RSS grew %ld MB", dt, grew_mb);
    /* a describe-only network has the shapes and no data */
    Net *shape = resnet_describe("resnet18", 2, NULL);
    CHECK(shape && shape->n_params > 0 && shape->params[0].data == NULL &&
          shape->params[0].shape[0] == 64);
    net_free(shape);
}

/* tests/t_convert.sh: load a converted torch checkpoint strictly into a fresh network. */
static int check_converted(const char *path, const char *arch, int classes) {
    Net *net = resnet_create(arch, classes, NULL, 0);
    if (!net) {
        fprintf(stderr, "%s\n", rn_error());
        return 1;
    }
    int rc = net_load_weights(net, path, 0);
    if (rc)
        fprintf(stderr, "%s\n", rn_error());
    else
        printf("%s: %d tensors loaded into %s\n", path, net->n_params, arch);
    net_free(net);
    return rc ? 1 : 0;
}

/* Files written on one host and read on another: tests/fixtures/le_sample.safetensors and
 * le_sample.npy were written by this code on x86-64 (--write-fixtures DIR). Every host
 * must read the same values from them, and write the same bytes again (so the files it
 * writes read back on x86-64). */
static const float sample_f32[5] = {1.5f, -2.25f, 3.0e-39f, 65504.0f, -0.0f};
static const int64_t sample_i64[3] = {-2, 0x0102030405060708LL, INT64_MIN};

static int write_samples(const char *st_path, const char *npy_path) {
    const int64_t f_shape[1] = {5}, i_shape[1] = {3}, npy_shape[2] = {1, 5};
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "written_on", "x86-64");
    st_writer_add_f32(&w, "f32", 1, f_shape, sample_f32);
    st_writer_add_i64(&w, "i64", 1, i_shape, sample_i64);
    int rc = st_writer_save(&w, st_path);
    st_writer_free(&w);
    return rc != 0 ? rc : write_npy_f32(npy_path, sample_f32, 2, npy_shape);
}

static void test_cross_host_files(void) {
    const char *dir = getenv("RN_FIXTURES");
    char st_path[600], npy_path[600];
    snprintf(st_path, sizeof st_path, "%s/le_sample.safetensors",
             dir && *dir ? dir : "tests/fixtures");
    snprintf(npy_path, sizeof npy_path, "%s/le_sample.npy", dir && *dir ? dir : "tests/fixtures");
    StFile f;
    int opened = st_open(st_path, &f) == 0;
    CHECK_MSG(opened, "%s", rn_error());
    if (!opened) return;
    float x[5];
    uint64_t u[3];
    const StTensor *t = st_find(&f, "f32");
    CHECK(t && st_read_f32(&f, t, x) == 0 && memcmp(x, sample_f32, sizeof x) == 0);
    t = st_find(&f, "i64");
    CHECK(t && t->dtype == ST_I64 && t->end - t->begin == 24);
    if (t && t->end - t->begin == 24) {
        rn_le_load(u, f.data + t->begin, 3, 8);
        for (int i = 0; i < 3; i++) CHECK(u[i] == (uint64_t)sample_i64[i]);
        /* the bytes themselves: least significant first */
        CHECK(f.data[t->begin + 8] == 0x08 && f.data[t->begin + 15] == 0x01);
    }
    st_close(&f);
    size_t n_npy = 0, n_st = 0, m_npy = 0, m_st = 0;
    uint8_t *npy = read_file(npy_path, &n_npy), *stf = read_file(st_path, &n_st);
    CHECK(npy && n_npy == 128 + 20);
    if (npy && n_npy == 128 + 20) {
        float y[5];
        rn_le_load(y, npy + 128, 5, 4);
        CHECK(memcmp(y, sample_f32, sizeof y) == 0 && npy[8] == 118 && npy[9] == 0);
    }
    const char *st2 = rn_strdup(tmp_path("le_sample.safetensors"));
    CHECK(write_samples(st2, tmp_path("le_sample.npy")) == 0);
    uint8_t *npy2 = read_file(tmp_path("le_sample.npy"), &m_npy), *stf2 = read_file(st2, &m_st);
    CHECK_MSG(stf && stf2 && n_st == m_st && memcmp(stf, stf2, n_st) == 0,
              "this host writes other safetensors bytes than x86-64 did");
    CHECK_MSG(npy && npy2 && n_npy == m_npy && memcmp(npy, npy2, n_npy) == 0,
              "this host writes other .npy bytes than x86-64 did");
    free(npy), free(stf), free(npy2), free(stf2), free((void *)st2);
}

int main(int argc, char **argv) {
    (void)test_shared_dir; /* every test needed here is self-contained */
    if (argc == 5 && strcmp(argv[1], "--check-file") == 0)
        return check_converted(argv[2], argv[3], atoi(argv[4]));
    if (argc == 3 && strcmp(argv[1], "--write-fixtures") == 0) {
        char a[600], b[600];
        snprintf(a, sizeof a, "%s/le_sample.safetensors", argv[2]);
        snprintf(b, sizeof b, "%s/le_sample.npy", argv[2]);
        return write_samples(a, b) == 0 ? 0 : 1;
    }
    RUN(test_roundtrip);
    RUN(test_json_features);
    RUN(test_rejects);
    RUN(test_f16_bf16);
    RUN(test_mutations);
    RUN(test_net_weights);
    RUN(test_create_for_loading);
    RUN(test_new_head);
    RUN(test_f16_weights);
    RUN(test_bn_eps_metadata);
    RUN(test_checkpoint_resume);
    RUN(test_model_file);
    RUN(test_cross_host_files);
    RUN(test_non_finite_refused);
    RUN(test_model_checked_before_built);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (tmp_dir[0] && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
    return test_summary();
}
