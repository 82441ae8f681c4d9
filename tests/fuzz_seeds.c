/* tests/fuzz_seeds.c - writes the fuzz targets' seed corpora: small valid files of every
 * format the project reads or writes, made at build time (nothing binary is committed).
 *
 *   fuzz_seeds IMAGE_DIR SAFETENSORS_DIR
 *
 * IMAGE_DIR (tests/fuzz_decode.c): PNG (gray, RGB, RGBA, 16-bit, palette; one with an
 * empty IDAT), baseline JPEG (colour and gray), BMP, TGA, GIF, PSD, PNM (P5/P6, 8 and 16
 * bits). SAFETENSORS_DIR (tests/fuzz_safetensors.c): a checkpoint of tests/fuzz.h's
 * network with its Adam state, its weights, a model file's metadata, and F16, BF16, F64,
 * I64 and empty tensors. */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include <stb_image_write.h>

static const char *dir;

static void put(const char *name, const void *data, size_t len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (write_file_atomic(path, data, len) != 0) {
        fprintf(stderr, "fuzz_seeds: %s\n", rn_error());
        exit(1);
    }
}

static void to_buf(void *ctx, void *data, int size) { buf_put(ctx, data, (size_t)size); }

static void put_be32(Buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    buf_put(b, x, 4);
}

/* stb_image_write's PNG with an empty IDAT chunk put before its own */
static void png_with_empty_idat(const Buf *png) {
    Buf b = {0};
    buf_put(&b, png->data, 33); /* signature and IHDR */
    put_be32(&b, 0);
    buf_put(&b, "IDAT\x35\xaf\x06\x1e", 8); /* type and the CRC of "IDAT" */
    buf_put(&b, png->data + 33, png->len - 33);
    put("empty_idat.png", b.data, b.len);
    buf_free(&b);
}

static void images(void) {
    enum { W = 6, H = 5 };
    uint8_t px[W * H * 4];
    for (int i = 0; i < W * H * 4; i++) px[i] = (uint8_t)(i * 37 + 11);
    Buf b = {0};
    for (int comp = 1; comp <= 4; comp++) {
        char name[32];
        b.len = 0;
        stbi_write_png_to_func(to_buf, &b, W, H, comp, px, W * comp);
        snprintf(name, sizeof name, "c%d.png", comp);
        put(name, b.data, b.len);
        if (comp == 3) png_with_empty_idat(&b);
        b.len = 0;
        stbi_write_bmp_to_func(to_buf, &b, W, H, comp, px);
        snprintf(name, sizeof name, "c%d.bmp", comp);
        put(name, b.data, b.len);
        b.len = 0;
        stbi_write_tga_to_func(to_buf, &b, W, H, comp, px);
        snprintf(name, sizeof name, "c%d.tga", comp);
        put(name, b.data, b.len);
        if (comp == 1 || comp == 3) {
            b.len = 0;
            stbi_write_jpg_to_func(to_buf, &b, W, H, comp, px, 80);
            snprintf(name, sizeof name, "c%d.jpg", comp);
            put(name, b.data, b.len);
        }
    }
    /* PNM: 8 and 16 bits, gray and RGB, with a comment */
    for (int wide = 0; wide <= 1; wide++)
        for (int rgb = 0; rgb <= 1; rgb++) {
            char name[32];
            b.len = 0;
            buf_printf(&b, "P%c\n# seed\n%d %d\n%d\n", rgb ? '6' : '5', W, H, wide ? 65535 : 255);
            buf_put(&b, px, (size_t)W * H * (rgb ? 3 : 1) * (wide ? 2 : 1));
            snprintf(name, sizeof name, "%s%d.%s", rgb ? "rgb" : "gray", wide ? 16 : 8,
                     rgb ? "ppm" : "pgm");
            put(name, b.data, b.len);
        }
    /* GIF89a 1x1, 2-colour palette */
    static const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a', 1, 0,    1,    0, 0x80, 0,
                                  0,   255, 255, 255, 0,   0,   0, 0x2C, 0,    0, 0,    0,
                                  1,   0,   1,   0,   0,   2,   2, 0x44, 0x01, 0, 0x3B};
    put("one.gif", gif, sizeof gif);
    /* PSD 2x2 RGB, raw planar */
    b.len = 0;
    buf_put(&b, "8BPS\0\1\0\0\0\0\0\0\0\3", 14);
    put_be32(&b, 2);
    put_be32(&b, 2);
    buf_put(&b, "\0\x08\0\x03", 4);
    put_be32(&b, 0);
    put_be32(&b, 0);
    put_be32(&b, 0);
    buf_put(&b, "\0\0", 2);
    buf_put(&b, px, 12);
    put("rgb.psd", b.data, b.len);
    buf_free(&b);
}

/* A hand-made file: header JSON, then the data bytes. */
static void raw_st(const char *name, const char *json, const void *data, size_t len) {
    Buf b = {0};
    uint64_t n = strlen(json);
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)(n >> (8 * i));
    buf_put(&b, le, 8);
    buf_put(&b, json, n);
    buf_put(&b, data, len);
    put(name, b.data, b.len);
    buf_free(&b);
}

static void safetensors(void) {
    char path[1024];
    Net *net = fuzz_net();
    OptConfig oc = opt_default(OPT_ADAM, 0.01f);
    Optimizer *opt = optimizer_create(net, &oc);
    float x[2 * 4] = {1, -2, 3, 0.5f, -1, 2, 0, 1}, dl[2 * 3];
    int labels[2] = {0, 2};
    float probs[2 * 3];
    if (net_plan(net, 2, 1, 1, 1) != 0) goto fail;
    const float *logits = net_forward(net, x, 2, 1);
    softmax_cross_entropy_forward(2, 3, logits, labels, NULL, 0, probs);
    softmax_cross_entropy_backward(2, 3, probs, labels, NULL, 0, dl);
    net_zero_grad(net);
    net_backward(net, dl, 2, NULL);
    optimizer_step(opt, net);
    Rng rng;
    rng_seed(&rng, 3);
    const char *keys[] = {"phase", "epoch"}, *vals[] = {"1", "1"};
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
    if (checkpoint_save(path, net, opt, &rng, keys, vals, 2) != 0) goto fail;
    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    if (net_save_weights(net, path, keys, vals, 2) != 0) goto fail;
    optimizer_free(opt);
    net_free(net);
    /* a model file's metadata (the weights of even the smallest arch are 1 MB) */
    raw_st("model_meta.safetensors",
           "{\"__metadata__\":{\"format\":\"resnet-c-model\",\"arch\":\"cifar_resnet20\","
           "\"num_classes\":\"2\",\"classes\":\"[\\\"a\\\",\\\"b\\\"]\",\"head\":\"mlp:4:bn\","
           "\"preprocess\":\"torchvision\",\"img_size\":\"32\",\"crop_pct\":\"1\"},"
           "\"linear.bias\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
           "\0\0\x80\x3f\0\0\0\xc0", 8);
    const uint8_t f16[4] = {0x00, 0x3c, 0x00, 0xc0}, bf16[4] = {0x80, 0x3f, 0x00, 0xc0};
    raw_st("f16.safetensors", "{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}",
           f16, 4);
    raw_st("bf16.safetensors",
           "{\"a\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[0,4]}}", bf16, 4);
    double d[2] = {1.5, -2.25};
    raw_st("f64.safetensors", "{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}",
           d, 16);
    int64_t i64[2] = {7, -7};
    raw_st("i64.safetensors",
           "{\"a\":{\"dtype\":\"I64\",\"shape\":[2,1],\"data_offsets\":[0,16]},"
           "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[16,16]}}",
           i64, 16);
    return;
fail:
    fprintf(stderr, "fuzz_seeds: %s\n", rn_error());
    exit(1);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: fuzz_seeds IMAGE_DIR SAFETENSORS_DIR\n");
        return 2;
    }
    if (mkdir_p(argv[1]) != 0 || mkdir_p(argv[2]) != 0) {
        fprintf(stderr, "fuzz_seeds: %s\n", rn_error());
        return 1;
    }
    dir = argv[1];
    images();
    dir = argv[2];
    safetensors();
    return 0;
}
