/* tests/test_data.c - decoding every format, rejecting bad input with a reason, datasets
 * (folders, CIFAR binaries, CSV), splits, preprocessing numbers, augmentation and loader
 * determinism. Fixtures are generated at test time into a temporary folder: PNG/BMP/TGA/
 * JPEG with stb_image_write, PNM/GIF/PSD/16-bit and palette PNG written byte by byte. */
#include "resnet.h"
#include "test.h"

#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic ignored "-Wunused-function" /* stb declares a few it never defines */
#endif
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
/* stb_image_write's JPEG encoder left-shifts negative ints (undefined behaviour that every
 * compiler implements as expected); keep UBSan's shift check for our code, not for it. */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((no_sanitize("shift"))), apply_to = function)
#endif
#include <stb_image_write.h>
#if defined(__clang__)
#pragma clang attribute pop
#endif

static char tmpdir[256];

static const char *tpath(const char *name) {
    static char p[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

static void put_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    if (len) fwrite(data, 1, len, f);
    fclose(f);
}

static void stb_to_buf(void *ctx, void *data, int size) { buf_put(ctx, data, (size_t)size); }

/* A w x h test pattern with distinct values everywhere. */
static uint8_t *pattern(int w, int h) {
    uint8_t *p = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *o = p + ((size_t)y * w + x) * 3;
            o[0] = (uint8_t)(x * 37 + y * 11);
            o[1] = (uint8_t)(y * 53 + 7);
            o[2] = (uint8_t)(x * y * 5 + 100);
        }
    return p;
}

/* ---------------------------------------------------------------- hand-written formats */

static uint32_t crc32_of(const uint8_t *p, size_t n, uint32_t crc) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

static void put_be32(Buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    buf_put(b, x, 4);
}

static void png_chunk(Buf *b, const char *type, const uint8_t *data, size_t n) {
    put_be32(b, (uint32_t)n);
    size_t start = b->len;
    buf_put(b, type, 4);
    if (n) buf_put(b, data, n);
    put_be32(b, crc32_of((const uint8_t *)b->data + start, n + 4, 0));
}

/* PNG with the given IHDR fields; raw = rows each prefixed by filter byte 0, stored in one
 * uncompressed deflate block. */
static void png_build(Buf *b, uint32_t w, uint32_t h, int depth, int ctype, const uint8_t *palette,
                      int n_pal, const uint8_t *raw, size_t raw_len) {
    buf_put(b, "\x89PNG\r\n\x1a\n", 8);
    uint8_t ihdr[13] = {(uint8_t)(w >> 24),
                        (uint8_t)(w >> 16),
                        (uint8_t)(w >> 8),
                        (uint8_t)w,
                        (uint8_t)(h >> 24),
                        (uint8_t)(h >> 16),
                        (uint8_t)(h >> 8),
                        (uint8_t)h,
                        (uint8_t)depth,
                        (uint8_t)ctype,
                        0,
                        0,
                        0};
    png_chunk(b, "IHDR", ihdr, 13);
    if (palette) png_chunk(b, "PLTE", palette, (size_t)n_pal * 3);
    if (raw) {
        Buf z = {0};
        uint8_t head[2] = {0x78, 0x01}, blk[5] = {1, (uint8_t)raw_len, (uint8_t)(raw_len >> 8),
                                                  (uint8_t)~raw_len, (uint8_t)(~raw_len >> 8)};
        buf_put(&z, head, 2);
        buf_put(&z, blk, 5);
        buf_put(&z, raw, raw_len);
        uint32_t a = 1, s = 0; /* adler32 */
        for (size_t i = 0; i < raw_len; i++) {
            a = (a + raw[i]) % 65521;
            s = (s + a) % 65521;
        }
        put_be32(&z, (s << 16) | a);
        png_chunk(b, "IDAT", (uint8_t *)z.data, z.len);
        buf_free(&z);
    }
    png_chunk(b, "IEND", NULL, 0);
}

/* GIF89a with a 4-colour palette; LZW codes are 3 bits because a clear code is sent
 * before every pair of pixels, so the code table never grows past 7. */
static void gif_build(Buf *b, int w, int h, const uint8_t pal[12], const uint8_t *index) {
    uint8_t head[13] = {
        'G',  'I', 'F', '8', '9', 'a', (uint8_t)w, (uint8_t)(w >> 8), (uint8_t)h, (uint8_t)(h >> 8),
        0x81, 0,   0};
    buf_put(b, head, 13);
    buf_put(b, pal, 12);
    uint8_t desc[11] = {
        0x2C, 0, 0, 0, 0, (uint8_t)w, (uint8_t)(w >> 8), (uint8_t)h, (uint8_t)(h >> 8),
        0,    2 /* LZW minimum code size */};
    buf_put(b, desc, 11);
    uint8_t data[255] = {0};
    int bits = 0, n = w * h;
    for (int i = 0; i <= n; i++) {
        int codes[3], nc = 0;
        if (i == n)
            codes[nc++] = 5; /* end of information */
        else {
            if (i % 2 == 0) codes[nc++] = 4; /* clear */
            codes[nc++] = index[i];
        }
        for (int c = 0; c < nc; c++, bits += 3)
            for (int k = 0; k < 3; k++)
                if (codes[c] >> k & 1) data[(bits + k) / 8] |= (uint8_t)(1 << ((bits + k) % 8));
    }
    uint8_t len = (uint8_t)((bits + 7) / 8);
    buf_put(b, &len, 1);
    buf_put(b, data, len);
    uint8_t tail[2] = {0, 0x3B};
    buf_put(b, tail, 2);
}

static void psd_build(Buf *b, int w, int h, const uint8_t *rgb) {
    buf_put(b, "8BPS\0\1\0\0\0\0\0\0\0\3", 14); /* version 1, reserved, 3 channels */
    put_be32(b, (uint32_t)h);
    put_be32(b, (uint32_t)w);
    buf_put(b, "\0\x08\0\x03", 4); /* depth 8, mode RGB */
    put_be32(b, 0);                /* colour mode data */
    put_be32(b, 0);                /* image resources */
    put_be32(b, 0);                /* layers and masks */
    buf_put(b, "\0\0", 2);         /* raw, planar */
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < w * h; i++) buf_put(b, &rgb[i * 3 + c], 1);
}

/* ---------------------------------------------------------------- decoding */

static int rejected(const char *path, const char *expect, int probe_too);

static int decode_ok(const char *path, int w, int h, const uint8_t *expect, int tol) {
    Image img;
    char why[256];
    if (image_decode_file(path, &img, why, sizeof why) != 0) {
        fprintf(stderr, "  %s: %s\n", path, why);
        return 0;
    }
    int ok = img.w == w && img.h == h;
    int worst = 0;
    for (int i = 0; ok && i < w * h * 3; i++) {
        int d = abs((int)img.rgb[i] - expect[i]);
        if (d > worst) worst = d;
    }
    if (!ok || worst > tol)
        fprintf(stderr, "  %s: %dx%d, worst pixel difference %d\n", path, img.w, img.h, worst);
    int pw, ph;
    ok = ok && worst <= tol && image_probe_file(path, &pw, &ph, why, sizeof why) == 0 && pw == w &&
         ph == h;
    image_free(&img);
    return ok;
}

static void test_formats_decode(void) {
    int w = 7, h = 5;
    uint8_t *rgb = pattern(w, h);
    Buf b = {0};
    stbi_write_png_to_func(stb_to_buf, &b, w, h, 3, rgb, w * 3);
    put_file(tpath("rgb.png"), b.data, b.len);
    CHECK(decode_ok(tpath("rgb.png"), w, h, rgb, 0));
    b.len = 0;
    stbi_write_bmp_to_func(stb_to_buf, &b, w, h, 3, rgb);
    put_file(tpath("rgb.bmp"), b.data, b.len);
    CHECK(decode_ok(tpath("rgb.bmp"), w, h, rgb, 0));
    b.len = 0;
    stbi_write_tga_to_func(stb_to_buf, &b, w, h, 3, rgb);
    put_file(tpath("rgb.tga"), b.data, b.len);
    CHECK(decode_ok(tpath("rgb.tga"), w, h, rgb, 0));

    /* RGBA: alpha dropped; gray: replicated */
    uint8_t rgba[7 * 5 * 4], gray[7 * 5], gray3[7 * 5 * 3];
    for (int i = 0; i < w * h; i++) {
        memcpy(rgba + i * 4, rgb + i * 3, 3);
        rgba[i * 4 + 3] = (uint8_t)(i * 7);
        gray[i] = (uint8_t)(i * 6);
        gray3[i * 3] = gray3[i * 3 + 1] = gray3[i * 3 + 2] = gray[i];
    }
    b.len = 0;
    stbi_write_png_to_func(stb_to_buf, &b, w, h, 4, rgba, w * 4);
    put_file(tpath("rgba.png"), b.data, b.len);
    CHECK(decode_ok(tpath("rgba.png"), w, h, rgb, 0));
    b.len = 0;
    stbi_write_png_to_func(stb_to_buf, &b, w, h, 1, gray, w);
    put_file(tpath("gray.png"), b.data, b.len);
    CHECK(decode_ok(tpath("gray.png"), w, h, gray3, 0));

    /* JPEG (lossy): a flat colour survives within a couple of levels */
    uint8_t flat[16 * 16 * 3];
    for (int i = 0; i < 16 * 16; i++) {
        flat[i * 3] = 200;
        flat[i * 3 + 1] = 60;
        flat[i * 3 + 2] = 30;
    }
    b.len = 0;
    stbi_write_jpg_to_func(stb_to_buf, &b, 16, 16, 3, flat, 95);
    put_file(tpath("flat.jpg"), b.data, b.len);
    CHECK(decode_ok(tpath("flat.jpg"), 16, 16, flat, 4));

    /* PNM: binary P6 and P5 */
    b.len = 0;
    buf_printf(&b, "P6\n# comment\n%d %d\n255\n", w, h);
    buf_put(&b, rgb, (size_t)w * h * 3);
    put_file(tpath("rgb.ppm"), b.data, b.len);
    CHECK(decode_ok(tpath("rgb.ppm"), w, h, rgb, 0));
    b.len = 0;
    buf_printf(&b, "P5 %d %d 255\n", w, h);
    buf_put(&b, gray, (size_t)w * h);
    put_file(tpath("gray.pgm"), b.data, b.len);
    CHECK(decode_ok(tpath("gray.pgm"), w, h, gray3, 0));
    /* 16-bit gray PNM (big-endian samples g * 257, scaled back to g): stb 2.27 overran its
     * buffer converting it to RGB (found by fuzzing) and kept the low byte */
    b.len = 0;
    buf_printf(&b, "P5 %d %d 65535\n", w, h);
    for (int i = 0; i < w * h; i++) {
        uint8_t be[2] = {gray[i], gray[i]};
        buf_put(&b, be, 2);
    }
    put_file(tpath("gray16.pgm"), b.data, b.len);
    CHECK(decode_ok(tpath("gray16.pgm"), w, h, gray3, 0));

    /* GIF89a, 3x2, palette indices */
    const uint8_t pal[12] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 250, 250, 250};
    const uint8_t idx[6] = {0, 1, 2, 3, 2, 1};
    uint8_t gif_rgb[18];
    for (int i = 0; i < 6; i++) memcpy(gif_rgb + i * 3, pal + idx[i] * 3, 3);
    b.len = 0;
    gif_build(&b, 3, 2, pal, idx);
    put_file(tpath("tiny.gif"), b.data, b.len);
    CHECK(decode_ok(tpath("tiny.gif"), 3, 2, gif_rgb, 0));

    /* PSD, raw RGB */
    b.len = 0;
    psd_build(&b, w, h, rgb);
    put_file(tpath("rgb.psd"), b.data, b.len);
    CHECK(decode_ok(tpath("rgb.psd"), w, h, rgb, 0));
    /* with an alpha channel: refused (stb's un-matting overflows a float-to-byte conversion
     * on dark pixels: found by fuzz_decode) */
    b.data[13] = 4;
    for (int i = 0; i < w * h; i++) buf_put(&b, "\x80", 1);
    put_file(tpath("rgba.psd"), b.data, b.len);
    CHECK(rejected(tpath("rgba.psd"), "PSD with 4 channels (an alpha channel) is not supported", 0));

    /* 16-bit RGB PNG: reduced to the high byte */
    uint8_t raw16[5 * (1 + 7 * 6)];
    for (int y = 0; y < h; y++) {
        raw16[y * (1 + w * 6)] = 0;
        for (int i = 0; i < w * 3; i++) {
            uint8_t v = rgb[y * w * 3 + i];
            raw16[y * (1 + w * 6) + 1 + i * 2] = v;
            raw16[y * (1 + w * 6) + 2 + i * 2] = (uint8_t)(255 - v); /* low byte: noise */
        }
    }
    b.len = 0;
    png_build(&b, (uint32_t)w, (uint32_t)h, 16, 2, NULL, 0, raw16, sizeof raw16);
    put_file(tpath("rgb16.png"), b.data, b.len);
    CHECK(decode_ok(tpath("rgb16.png"), w, h, rgb, 0));

    /* palette PNG, 8-bit indices */
    uint8_t rawp[2 * (1 + 3)] = {0, 0, 1, 2, 0, 3, 2, 1};
    b.len = 0;
    png_build(&b, 3, 2, 8, 3, pal, 4, rawp, sizeof rawp);
    put_file(tpath("pal.png"), b.data, b.len);
    CHECK(decode_ok(tpath("pal.png"), 3, 2, gif_rgb, 0));

    /* image_write_png round trip */
    Image img = {w, h, rgb};
    CHECK(image_write_png(tpath("written.png"), &img) == 0);
    CHECK(decode_ok(tpath("written.png"), w, h, rgb, 0));
    buf_free(&b);
    free(rgb);
}

/* The file is rejected by decode (and probe when probe_too) with a reason containing
 * `expect`. */
static int rejected(const char *path, const char *expect, int probe_too) {
    Image img;
    char why[256] = "";
    int ok = 1;
    if (image_decode_file(path, &img, why, sizeof why) == 0) {
        fprintf(stderr, "  %s: decoded (%dx%d), expected '%s'\n", path, img.w, img.h, expect);
        image_free(&img);
        return 0;
    }
    if (!strstr(why, expect)) {
        fprintf(stderr, "  %s: reason '%s', expected '%s'\n", path, why, expect);
        ok = 0;
    }
    if (!strstr(rn_error(), path)) ok = 0;
    int w, h;
    why[0] = 0;
    if (probe_too &&
        (image_probe_file(path, &w, &h, why, sizeof why) == 0 || !strstr(why, expect))) {
        fprintf(stderr, "  %s: probe reason '%s', expected '%s'\n", path, why, expect);
        ok = 0;
    }
    return ok;
}

static void test_bad_inputs_rejected(void) {
    put_file(tpath("empty.jpg"), "", 0);
    CHECK(rejected(tpath("empty.jpg"), "empty file", 1));
    const char *text = "this is not a JPEG, just some text\n";
    put_file(tpath("text.jpg"), text, strlen(text));
    CHECK(rejected(tpath("text.jpg"), "not an image (unknown format)", 1));
    uint8_t noise[4096];
    Rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < 4096; i++) noise[i] = (uint8_t)rng_next(&r);
    noise[0] = 0x42; /* make sure it is not a TGA with a plausible header either */
    noise[1] = 0x7F;
    put_file(tpath("noise.png"), noise, sizeof noise);
    CHECK(rejected(tpath("noise.png"), "not an image", 1));
    CHECK(rejected(tpath("missing.png"), "cannot open", 1));

    /* truncated PNG and JPEG (header intact: probe passes, decode fails) */
    int w = 40, h = 30;
    uint8_t *rgb = pattern(w, h);
    Buf b = {0};
    stbi_write_png_to_func(stb_to_buf, &b, w, h, 3, rgb, w * 3);
    put_file(tpath("cut.png"), b.data, b.len / 2);
    CHECK(rejected(tpath("cut.png"), "truncated or corrupt PNG", 0));
    b.len = 0;
    stbi_write_jpg_to_func(stb_to_buf, &b, w, h, 3, rgb, 90);
    put_file(tpath("cut.jpg"), b.data, b.len * 3 / 4);
    CHECK(rejected(tpath("cut.jpg"), "truncated or corrupt JPEG", 0));
    /* only the first 200 bytes: headers, no scan */
    put_file(tpath("nosof.jpg"), b.data, 200);
    CHECK(rejected(tpath("nosof.jpg"), "truncated or corrupt JPEG", 0));

    /* a valid PNG header claiming 60000 x 60000: refused before any allocation */
    b.len = 0;
    png_build(&b, 60000, 60000, 8, 2, NULL, 0, NULL, 0);
    put_file(tpath("huge.png"), b.data, b.len);
    CHECK(rejected(tpath("huge.png"), "image 60000x60000 exceeds the 16384-pixel limit", 1));
    b.len = 0;
    png_build(&b, 16384, 16385, 8, 2, NULL, 0, NULL, 0);
    put_file(tpath("tall.png"), b.data, b.len);
    CHECK(rejected(tpath("tall.png"), "16384x16385 exceeds", 1));
    /* within the caps, but far more pixels than a 57-byte file can hold */
    b.len = 0;
    png_build(&b, 16384, 16384, 8, 2, NULL, 0, NULL, 0);
    char why[256];
    put_file(tpath("bomb.png"), b.data, b.len);
    CHECK(rejected(tpath("bomb.png"), "corrupt PNG: 16384x16384 pixels cannot come from", 1));
    /* PNM variant stb does not read */
    put_file(tpath("ascii.ppm"), "P3\n1 1\n255\n1 2 3\n", 17);
    CHECK(rejected(tpath("ascii.ppm"), "PNM", 1));
    /* memory API: empty and NULL-safe */
    Image img;
    CHECK(image_decode_memory((const uint8_t *)"", 0, &img, why, sizeof why) == -1);
    CHECK(strcmp(why, "empty file") == 0);
    buf_free(&b);
    free(rgb);
}

/* ---------------------------------------------------------------- hostile inputs (issue 17) */

/* PNM headers stb 2.27 misread, and pixel data shorter than the header says: each one line
 * naming the problem, from decode and from the dataset probe. */
static void test_pnm_hostile(void) {
    Buf b = {0};
    buf_put(&b, "P5", 2);
    for (int i = 0; i < 3900; i++) buf_put(&b, " ", 1);
    buf_printf(&b, "4000 4000 70000"); /* stb read maxval 7000: 8-bit path, 16-bit data */
    put_file(tpath("overread.pgm"), b.data, b.len);
    CHECK(rejected(tpath("overread.pgm"), "truncated or corrupt PNM header", 1));
    put_file(tpath("min.pgm"), "P5\v1\v1\v\v74552", 13);
    CHECK(rejected(tpath("min.pgm"), "truncated or corrupt PNM header", 1));
    b.len = 0;
    buf_printf(&b, "P5 32 32 255\n");
    put_file(tpath("header_only.pgm"), b.data, b.len);
    CHECK(rejected(tpath("header_only.pgm"),
                   "truncated PNM (0 bytes of pixel data, 32x32 needs 1024)", 1));
    for (int i = 0; i < 100; i++) buf_put(&b, "\x7f", 1);
    put_file(tpath("short.pgm"), b.data, b.len);
    CHECK(rejected(tpath("short.pgm"), "truncated PNM (100 bytes of pixel data", 1));
    b.len = 0;
    buf_printf(&b, "P6 2 1 65535\n");
    buf_put(&b, "\1\2\3\4\5\6\7\10\11\12\13", 11); /* 12 bytes needed */
    put_file(tpath("short16.ppm"), b.data, b.len);
    CHECK(rejected(tpath("short16.ppm"), "truncated PNM (11 bytes", 1));
    put_file(tpath("maxval0.pgm"), "P5 1 1 0\n\0", 10);
    CHECK(rejected(tpath("maxval0.pgm"), "maxval 0", 1));
    /* a header longer than the 4 KB probe (a long comment) and maxval 15: values scaled */
    b.len = 0;
    buf_printf(&b, "P5\n#");
    for (int i = 0; i < 5000; i++) buf_put(&b, "c", 1);
    buf_printf(&b, "\n2 1\n15\n");
    buf_put(&b, "\x0f\x05", 2);
    put_file(tpath("comment.pgm"), b.data, b.len);
    int w = 0, h = 0;
    char why[256] = "";
    CHECK(image_probe_file(tpath("comment.pgm"), &w, &h, why, sizeof why) == 0 && w == 2 && h == 1);
    uint8_t expect[6] = {255, 255, 255, 85, 85, 85};
    CHECK(decode_ok(tpath("comment.pgm"), 2, 1, expect, 0));
    buf_free(&b);
}

/* A JPEG whose start-of-scan header names `dc`/`ac` tables for its first component (or
 * another component id): made from stb_image_write's baseline file. */
static size_t jpeg_with_scan(Buf *b, int id, int tables) {
    uint8_t rgb[8 * 8 * 3];
    for (int i = 0; i < 8 * 8 * 3; i++) rgb[i] = (uint8_t)(i * 7);
    b->len = 0;
    stbi_write_jpg_to_func(stb_to_buf, b, 8, 8, 3, rgb, 90);
    uint8_t *p = (uint8_t *)b->data;
    for (size_t i = 0; i + 6 < b->len; i++)
        if (p[i] == 0xFF && p[i + 1] == 0xDA) {
            if (id >= 0) p[i + 5] = (uint8_t)id;
            if (tables >= 0) p[i + 6] = (uint8_t)tables;
            return i;
        }
    return 0;
}

static void test_jpeg_scan_tables(void) {
    Buf b = {0};
    CHECK(jpeg_with_scan(&b, -1, -1) > 0);
    put_file(tpath("scan_ok.jpg"), b.data, b.len);
    Image img;
    char why[256] = "";
    CHECK(image_decode_file(tpath("scan_ok.jpg"), &img, why, sizeof why) == 0);
    image_free(&img);
    /* DC table 3 and AC table 2 are never defined: stb decoded from uninitialised memory */
    jpeg_with_scan(&b, -1, 0x32);
    put_file(tpath("scan_dc3.jpg"), b.data, b.len);
    CHECK(rejected(tpath("scan_dc3.jpg"), "scan uses DC Huffman table 3, never defined", 1));
    jpeg_with_scan(&b, -1, 0x02);
    put_file(tpath("scan_ac2.jpg"), b.data, b.len);
    CHECK(rejected(tpath("scan_ac2.jpg"), "scan uses AC Huffman table 2, never defined", 1));
    /* a component the frame lacks: stb failed without a reason, so the last one (a PNG's)
     * was reported */
    put_file(tpath("sig.png"), "\x89PNG\r\n\x1a\nxxxxxxxxxxxx", 20);
    CHECK(image_decode_file(tpath("sig.png"), &img, why, sizeof why) != 0);
    jpeg_with_scan(&b, 9, -1);
    put_file(tpath("scan_id9.jpg"), b.data, b.len);
    CHECK(rejected(tpath("scan_id9.jpg"), "scan names component 9, not in the frame", 1));
    buf_free(&b);
}

/* A PNG whose first IDAT is empty (legal; stb added zero to a NULL pointer) decodes to the
 * same pixels; cut short after it, it is refused with a reason. */
static void test_png_empty_idat(void) {
    uint8_t *rgb = pattern(6, 5);
    Buf b = {0}, e = {0};
    stbi_write_png_to_func(stb_to_buf, &b, 6, 5, 3, rgb, 6 * 3);
    buf_put(&e, b.data, 33);
    buf_put(&e, "\0\0\0\0IDAT\x35\xaf\x06\x1e", 12);
    buf_put(&e, b.data + 33, b.len - 33);
    put_file(tpath("empty_idat.png"), e.data, e.len);
    CHECK(decode_ok(tpath("empty_idat.png"), 6, 5, rgb, 0));
    put_file(tpath("empty_idat_cut.png"), e.data, 33 + 12 + 20);
    CHECK(rejected(tpath("empty_idat_cut.png"), "PNG", 0));
    /* a chunk claiming more than the file holds is refused before stb allocates for it
     * (it asked for 2 GB: found by fuzz_decode) */
    Buf big = {0};
    buf_put(&big, b.data, 33);
    buf_put(&big, "\x7f\xff\xff\xf0IDAT\x78\x5e", 10);
    put_file(tpath("idat_claims_2gb.png"), big.data, big.len);
    CHECK(rejected(tpath("idat_claims_2gb.png"), "chunk 'IDAT' at byte 33 claims 2147483632 bytes",
                   0));
    buf_free(&big);
    buf_free(&b);
    buf_free(&e);
    free(rgb);
}

/* ---------------------------------------------------------------- preprocessing */

static void test_preprocess_numbers(void) {
    uint8_t px[2 * 2 * 3];
    for (int i = 0; i < 4; i++) {
        px[i * 3] = 10;
        px[i * 3 + 1] = 20;
        px[i * 3 + 2] = 30;
    }
    Image img = {2, 2, px};
    float out[12];
    Preprocess p = {PREP_TORCHVISION, 2, 1.0f};
    preprocess_image(&img, &p, NULL, NULL, out);
    CHECK_CLOSE(out[0], (10 / 255.0 - 0.485) / 0.229, 1e-5);
    CHECK_CLOSE(out[4], (20 / 255.0 - 0.456) / 0.224, 1e-5);
    CHECK_CLOSE(out[11], (30 / 255.0 - 0.406) / 0.225, 1e-5);
    p.kind = PREP_CAFFE; /* BGR, 0..255 minus the BGR mean */
    preprocess_image(&img, &p, NULL, NULL, out);
    CHECK_CLOSE(out[0], 30 - 103.939, 1e-4);
    CHECK_CLOSE(out[4], 20 - 116.779, 1e-4);
    CHECK_CLOSE(out[8], 10 - 123.68, 1e-4);
    p.kind = PREP_UNIT;
    preprocess_image(&img, &p, NULL, NULL, out);
    CHECK_CLOSE(out[3], 10 / 255.0, 1e-6);
    CHECK_CLOSE(out[7], 20 / 255.0, 1e-6);
    /* constant image, resized up (crop_pct 0.5: shorter side 4) then cropped: constant */
    p.crop_pct = 0.5f;
    preprocess_image(&img, &p, NULL, NULL, out);
    for (int i = 0; i < 4; i++) CHECK_CLOSE(out[i], 10 / 255.0, 1e-6);
    CHECK(strcmp(prep_name(PREP_CAFFE), "caffe") == 0);
    PrepKind k;
    CHECK(prep_parse("unit", &k) == 0 && k == PREP_UNIT);
    CHECK(prep_parse("imagenet", &k) == -1);
}

/* Center crop offsets as torchvision: round((w - size) / 2) with half to even; no
 * resampling when the shorter side already equals the target. */
static void test_center_crop_rounding(void) {
    int widths[4] = {4, 5, 7, 9}, expect_left[4] = {1, 2, 2, 4};
    for (int t = 0; t < 4; t++) {
        int w = widths[t];
        uint8_t px[2 * 9 * 3];
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < 3; c++) px[(y * w + x) * 3 + c] = (uint8_t)(x * 10 + c);
        Image img = {w, 2, px};
        Preprocess p = {PREP_UNIT, 2, 1.0f};
        float out[12];
        preprocess_image(&img, &p, NULL, NULL, out);
        CHECK_MSG(fabsf(out[0] * 255 - expect_left[t] * 10) < 1e-3, "w=%d: left column %g", w,
                  out[0] * 255 / 10);
        CHECK_CLOSE(out[1] * 255, (expect_left[t] + 1) * 10, 1e-3);
        CHECK_CLOSE(out[4] * 255, expect_left[t] * 10 + 1, 1e-3); /* green plane */
    }
    /* crop_pct > 1: the resized image is smaller than the crop; padded with black */
    uint8_t px[3] = {255, 255, 255};
    Image one = {1, 1, px};
    Preprocess p = {PREP_UNIT, 3, 3.0f};
    float out[27];
    preprocess_image(&one, &p, NULL, NULL, out);
    CHECK_CLOSE(out[4], 1.0, 1e-6); /* center pixel */
    CHECK_CLOSE(out[0], 0.0, 1e-6);
}

/* Resize + center crop against torchvision on PIL images: Resize(int(size / crop_pct)),
 * CenterCrop(size), ToTensor() * 255 of pattern(w, h), values printed by PIL 9.4 once. */
static void test_resize_matches_pil(void) {
    static const int expect_a[12] = {127, 180, 139, 192, 82, 82, 144, 144, 121, 131, 139, 157};
    static const int expect_b[48] = {125, 129, 126, 127, 133, 127, 127, 128, 125, 127, 129, 130,
                                     122, 131, 129, 127, 112, 112, 112, 112, 125, 125, 125, 125,
                                     146, 146, 146, 146, 137, 137, 137, 137, 140, 131, 129, 132,
                                     131, 131, 129, 127, 127, 127, 123, 125, 136, 131, 123, 118};
    struct {
        int w, h, size;
        float pct;
        const int *expect;
    } cases[2] = {{7, 5, 2, 0.5f, expect_a}, {40, 30, 4, 0.875f, expect_b}};
    for (int t = 0; t < 2; t++) {
        uint8_t *px = pattern(cases[t].w, cases[t].h);
        Image img = {cases[t].w, cases[t].h, px};
        Preprocess p = {PREP_UNIT, cases[t].size, cases[t].pct};
        float out[48];
        preprocess_image(&img, &p, NULL, NULL, out);
        int n = 3 * cases[t].size * cases[t].size, bad = 0;
        for (int i = 0; i < n; i++) bad += fabsf(out[i] * 255 - cases[t].expect[i]) > 1e-3f;
        CHECK_MSG(bad == 0, "case %d: %d of %d values differ from PIL", t, bad, n);
        free(px);
    }
}

static void test_augment_deterministic(void) {
    int w = 50, h = 40;
    uint8_t *px = pattern(w, h);
    Image img = {w, h, px};
    Preprocess p = {PREP_TORCHVISION, 24, 0.875f};
    Augment a = augment_default();
    CHECK(a.enabled && a.hflip && fabsf(a.scale_min - 0.08f) < 1e-6f);
    a.rotate_deg = 15;
    a.translate = 0.1f;
    a.brightness = 0.2f;
    a.contrast = 0.2f;
    size_t n = 3 * 24 * 24;
    float *x1 = malloc(n * sizeof(float)), *x2 = malloc(n * sizeof(float)),
          *x3 = malloc(n * sizeof(float)), *ev = malloc(n * sizeof(float));
    Rng r1, r2, r3;
    rng_seed(&r1, 42);
    rng_seed(&r2, 42);
    rng_seed(&r3, 43);
    preprocess_image(&img, &p, &a, &r1, x1);
    preprocess_image(&img, &p, &a, &r2, x2);
    preprocess_image(&img, &p, &a, &r3, x3);
    CHECK(memcmp(x1, x2, n * sizeof(float)) == 0);
    CHECK(memcmp(x1, x3, n * sizeof(float)) != 0);
    CHECK(r1.s[0] == r2.s[0]);
    for (size_t i = 0; i < n; i++) CHECK(isfinite(x1[i]) && x1[i] > -2.2f && x1[i] < 2.7f);
    /* disabled augmentation is the eval transform and draws nothing */
    Rng r4 = r1;
    a.enabled = 0;
    preprocess_image(&img, &p, &a, &r4, x2);
    preprocess_image(&img, &p, NULL, NULL, ev);
    CHECK(memcmp(x2, ev, n * sizeof(float)) == 0 && r4.s[0] == r1.s[0]);
    free(x1);
    free(x2);
    free(x3);
    free(ev);
    free(px);
}

/* ---------------------------------------------------------------- datasets */

static void write_png_file(const char *path, int w, int h, uint8_t shade) {
    uint8_t *px = malloc((size_t)w * h * 3);
    memset(px, shade, (size_t)w * h * 3);
    Image img = {w, h, px};
    if (image_write_png(path, &img) != 0) fprintf(stderr, "  %s\n", rn_error());
    free(px);
}

static void test_folder_dataset(void) {
    const char *dirs[] = {"folder",        "folder/zebra", "folder/ant", "folder/ant/nested",
                          "folder/.cache", "folder/mole"};
    for (int i = 0; i < 6; i++) mkdir_p(tpath(dirs[i]));
    write_png_file(tpath("folder/zebra/b.png"), 4, 3, 10);
    write_png_file(tpath("folder/zebra/a.PNG"), 4, 3, 20);
    write_png_file(tpath("folder/ant/x.png"), 5, 5, 30);
    write_png_file(tpath("folder/ant/nested/y.png"), 5, 5, 40);
    write_png_file(tpath("folder/ant/.hidden.png"), 5, 5, 50);
    write_png_file(tpath("folder/.cache/c.png"), 5, 5, 60);
    put_file(tpath("folder/ant/notes.txt"), "hello", 5);
    put_file(tpath("folder/zebra/broken.jpg"), "not a jpeg", 10);
    put_file(tpath("folder/README"), "x", 1);
    Dataset d;
    CHECK(dataset_from_folder(tpath("folder"), &d) == 0);
    CHECK(d.n_classes == 3);
    if (d.n_classes == 3) {
        CHECK(strcmp(d.class_names[0], "ant") == 0 && strcmp(d.class_names[1], "mole") == 0 &&
              strcmp(d.class_names[2], "zebra") == 0);
    }
    CHECK(d.n == 4 && d.n_skipped == 1);
    if (d.n == 4) {
        CHECK(d.labels[0] == 0 && d.labels[1] == 0 && d.labels[2] == 2 && d.labels[3] == 2);
        CHECK(strstr(d.paths[0], "ant/x.png") && strstr(d.paths[1], "ant/nested/y.png"));
        CHECK(strstr(d.paths[2], "zebra/a.PNG") && strstr(d.paths[3], "zebra/b.png"));
        Image img;
        char why[128];
        CHECK(dataset_load_image(&d, 2, &img, why, sizeof why) == 0 && img.w == 4 &&
              img.rgb[0] == 20);
        image_free(&img);
    }
    CHECK(d.skip_reasons && strstr(d.skip_reasons[0], "broken.jpg: not an image"));
    float wts[3];
    class_weights_balanced(&d, wts);
    CHECK_CLOSE(wts[0], 4.0 / (3 * 2), 1e-6);
    CHECK(wts[1] == 0.0f);
    FILE *f = tmpfile();
    dataset_summary(&d, "folder", f);
    rewind(f);
    char text[2048] = {0};
    size_t got = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    CHECK(got > 0 && strstr(text, "4 images, 3 classes") && strstr(text, "skipped 1 file"));

    /* val folder with train's classes, one of which is missing */
    char *names[4] = {"ant", "mole", "zebra", "yak"};
    Dataset v;
    CHECK(dataset_from_folder_classes(tpath("folder"), names, 4, &v) == 0);
    CHECK(v.n == 4 && v.n_classes == 4 && strcmp(v.class_names[3], "yak") == 0);
    dataset_free(&v);
    Dataset u;
    CHECK(dataset_from_unlabelled(tpath("folder/ant"), &u) == 0);
    CHECK(u.n == 2 && u.labels[0] == -1 && u.n_classes == 0);
    dataset_free(&u);
    CHECK(dataset_from_folder(tpath("no_such_dir"), &v) == -1);
    CHECK(strstr(rn_error(), "no_such_dir") != NULL);
    dataset_free(&d);
}

/* Symlinked folders are entered once: cat/self -> . and cat/up -> .. (the root) and
 * dog/cats -> ../cat add nothing; each image keeps its own class. */
static void test_folder_symlinks(void) {
#ifdef _WIN32
    SKIP("symbolic links need privileges on Windows");
#else
    mkdir_p(tpath("links/cat"));
    mkdir_p(tpath("links/dog"));
    write_png_file(tpath("links/cat/c1.png"), 4, 4, 1);
    write_png_file(tpath("links/cat/c2.png"), 4, 4, 2);
    write_png_file(tpath("links/dog/d1.png"), 4, 4, 3);
    CHECK(symlink(".", tpath("links/cat/self")) == 0);
    CHECK(symlink("..", tpath("links/cat/up")) == 0);
    CHECK(symlink("../cat", tpath("links/dog/cats")) == 0);
    CHECK(symlink("loop2", tpath("links/dog/loop1")) == 0 &&
          symlink("loop1", tpath("links/dog/loop2")) == 0);
    Dataset d;
    CHECK(dataset_from_folder(tpath("links"), &d) == 0);
    CHECK_MSG(d.n == 3, "%d images", d.n);
    int cats = 0;
    for (int i = 0; i < d.n; i++) cats += d.labels[i] == 0;
    CHECK(cats == 2);
    dataset_free(&d);
    Dataset u;
    CHECK(dataset_from_unlabelled(tpath("links"), &u) == 0);
    CHECK_MSG(u.n == 3, "%d unlabelled images", u.n);
    dataset_free(&u);
#endif
}

/* A class folder named in Latin-1 would make a model file no program can read; an empty
 * class folder is fine (qsort of nothing was undefined behaviour). */
static void test_folder_names(void) {
    mkdir_p(tpath("names/caf\xe9"));
    mkdir_p(tpath("names/tea"));
    write_png_file(tpath("names/caf\xe9/a.png"), 4, 4, 1);
    write_png_file(tpath("names/tea/b.png"), 4, 4, 2);
    Dataset d;
    CHECK(dataset_from_folder(tpath("names"), &d) == -1);
    CHECK_MSG(strstr(rn_error(), "class name 'caf\\xe9' is not valid UTF-8"), "%s", rn_error());
    mkdir_p(tpath("empty_class/none"));
    mkdir_p(tpath("empty_class/some"));
    write_png_file(tpath("empty_class/some/a.png"), 4, 4, 1);
    CHECK(dataset_from_folder(tpath("empty_class"), &d) == 0 && d.n == 1 && d.n_classes == 2);
    dataset_free(&d);
    Buf j = {0};
    buf_json_string(&j, "caf\xe9 ok \xc3\xa9");
    buf_put(&j, "", 1);
    CHECK_MSG(strcmp(j.data, "\"caf\xef\xbf\xbd ok \xc3\xa9\"") == 0, "%s", j.data);
    buf_free(&j);
}

/* A NUL byte ended the CSV there (the lines after it silently dropped); a UTF-8 byte order
 * mark hid the header line. */
static void test_csv_hostile(void) {
    mkdir_p(tpath("csv2"));
    write_png_file(tpath("csv2/a.png"), 3, 3, 1);
    write_png_file(tpath("csv2/b.png"), 3, 3, 2);
    const char nul[] = "a.png,x\nb.png,y\0\nb.png,z\n";
    /* not "nul.csv": NUL, with any extension, is a device name on Windows */
    put_file(tpath("csv2/zero_byte.csv"), nul, sizeof nul - 1);
    Dataset d;
    CHECK(dataset_from_csv(tpath("csv2/zero_byte.csv"), &d) == -1);
    CHECK_MSG(strstr(rn_error(), "zero_byte.csv:2: NUL byte at offset 15"), "%s", rn_error());
    const char bom[] = "\xef\xbb\xbfpath,label\na.png,x\nb.png,y\n";
    put_file(tpath("csv2/bom.csv"), bom, sizeof bom - 1);
    CHECK(dataset_from_csv(tpath("csv2/bom.csv"), &d) == 0 && d.n == 2 && d.n_classes == 2);
    dataset_free(&d);
    put_file(tpath("csv2/latin.csv"), "a.png,caf\xe9\nb.png,y\n", 19);
    CHECK(dataset_from_csv(tpath("csv2/latin.csv"), &d) == -1 && strstr(rn_error(), "latin.csv:1"));
}

static void test_cifar_binary(void) {
    mkdir_p(tpath("cifar"));
    /* CIFAR-10: two training batches of 3 records, one test batch of 2 */
    for (int b = 1; b <= 3; b++) {
        int n = b == 3 ? 2 : 3;
        uint8_t *rec = calloc((size_t)n, 3073);
        for (int i = 0; i < n; i++) {
            uint8_t *r = rec + i * 3073;
            r[0] = (uint8_t)(b * 3 + i) % 10;
            for (int k = 0; k < 1024; k++) {
                r[1 + k] = (uint8_t)(k + i);         /* R plane */
                r[1 + 1024 + k] = (uint8_t)(b * 50); /* G */
                r[1 + 2048 + k] = (uint8_t)(255 - k % 256);
            }
        }
        char name[32];
        if (b == 3)
            snprintf(name, sizeof name, "cifar/test_batch.bin");
        else
            snprintf(name, sizeof name, "cifar/data_batch_%d.bin", b);
        put_file(tpath(name), rec, (size_t)n * 3073);
        free(rec);
    }
    const char *meta = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
    put_file(tpath("cifar/batches.meta.txt"), meta, strlen(meta));
    Dataset d;
    CHECK(dataset_from_cifar(tpath("cifar"), 1, &d) == 0);
    CHECK(d.n == 6 && d.n_classes == 10 && d.pixel_w == 32 && d.pixels && !d.paths);
    if (d.n == 6) {
        CHECK(strcmp(d.class_names[3], "cat") == 0);
        CHECK(d.labels[0] == 3 && d.labels[4] == 7);
        /* item 4 = batch 2 record 1: pixel (0, 5) is R = 5 + 1, G = 100, B = 250 */
        uint8_t *p = d.pixels + 4 * 3072 + 5 * 3;
        CHECK(p[0] == 6 && p[1] == 100 && p[2] == 250);
        Image img;
        char why[64];
        CHECK(dataset_load_image(&d, 4, &img, why, sizeof why) == 0 && img.w == 32 &&
              img.rgb[15] == 6);
        image_free(&img);
        int idx[2] = {4, 1};
        Dataset s;
        dataset_subset(&d, idx, 2, &s);
        CHECK(s.n == 2 && s.labels[0] == 7 && s.pixels[5 * 3] == 6);
        dataset_free(&s);
    }
    dataset_free(&d);
    CHECK(dataset_from_cifar(tpath("cifar"), 0, &d) == 0 && d.n == 2 && d.labels[1] == 0);
    dataset_free(&d);
    /* CIFAR-100: coarse + fine label bytes, fine labels used */
    mkdir_p(tpath("cifar100"));
    uint8_t rec[2 * 3074] = {0};
    rec[0] = 4;
    rec[1] = 77;
    rec[3074] = 1;
    rec[3075] = 99;
    put_file(tpath("cifar100/test.bin"), rec, sizeof rec);
    CHECK(dataset_from_cifar(tpath("cifar100"), 0, &d) == 0 && d.n == 2 && d.n_classes == 100 &&
          d.labels[0] == 77 && d.labels[1] == 99);
    dataset_free(&d);
    /* wrong size */
    put_file(tpath("cifar100/train.bin"), rec, 3000);
    CHECK(dataset_from_cifar(tpath("cifar100"), 1, &d) == -1 && strstr(rn_error(), "3074-byte"));
    CHECK(dataset_from_cifar(tpath("folder"), 1, &d) == -1);
}

static void test_csv_dataset(void) {
    mkdir_p(tpath("csv/img"));
    write_png_file(tpath("csv/img/a.png"), 3, 3, 1);
    write_png_file(tpath("csv/img/b.png"), 3, 3, 2);
    write_png_file(tpath("csv/c.png"), 3, 3, 3);
    char text[1024];
    snprintf(text, sizeof text,
             "path,label\nimg/a.png,dog\r\nimg/b.png, cat\n\n%s,dog\nimg/gone.png,cat\n",
             tpath("csv/c.png"));
    put_file(tpath("csv/list.csv"), text, strlen(text));
    Dataset d;
    CHECK(dataset_from_csv(tpath("csv/list.csv"), &d) == 0);
    CHECK(d.n == 3 && d.n_classes == 2 && d.n_skipped == 1);
    if (d.n == 3 && d.n_classes == 2) {
        CHECK(strcmp(d.class_names[0], "cat") == 0 && strcmp(d.class_names[1], "dog") == 0);
        CHECK(d.labels[0] == 1 && d.labels[1] == 0 && d.labels[2] == 1);
        CHECK(strstr(d.paths[0], "csv/img/a.png") != NULL);
    }
    dataset_free(&d);
    put_file(tpath("csv/bad.csv"), "img/a.png\n", 10);
    CHECK(dataset_from_csv(tpath("csv/bad.csv"), &d) == -1 && strstr(rn_error(), "bad.csv:1"));
    /* integer labels sort numerically */
    put_file(tpath("csv/num.csv"), "img/a.png,10\nimg/b.png,9\n", 25);
    CHECK(dataset_from_csv(tpath("csv/num.csv"), &d) == 0 && strcmp(d.class_names[0], "9") == 0);
    dataset_free(&d);
}

static void test_split_stratified(void) {
    Dataset d = {0};
    d.n = 150;
    d.n_classes = 2;
    d.labels = malloc(150 * sizeof(int));
    d.paths = calloc(150, sizeof(char *));
    char *names[2] = {"a", "b"};
    d.class_names = names;
    for (int i = 0; i < 150; i++) {
        char p[32];
        snprintf(p, sizeof p, "item%03d", i);
        d.paths[i] = rn_strdup(p);
        d.labels[i] = i % 3 == 2; /* 100 of class 0, 50 of class 1 */
    }
    Dataset tr, va, te, tr2;
    CHECK(dataset_split(&d, 0.7f, 0.15f, 5, &tr, &va, &te) == 0);
    CHECK(dataset_split(&d, 0.7f, 0.15f, 5, &tr2, NULL, NULL) == 0);
    int count[3][2] = {{0}};
    Dataset *parts[3] = {&tr, &va, &te};
    int seen[150] = {0};
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < parts[s]->n; i++) {
            count[s][parts[s]->labels[i]]++;
            seen[atoi(parts[s]->paths[i] + 4)]++;
        }
    CHECK(count[0][0] == 70 && count[0][1] == 35);
    CHECK(count[1][0] == 15 && count[1][1] == 8);
    CHECK(count[2][0] == 15 && count[2][1] == 7);
    int all_once = 1;
    for (int i = 0; i < 150; i++) all_once &= seen[i] == 1;
    CHECK(all_once);
    int same = tr.n == tr2.n;
    for (int i = 0; same && i < tr.n; i++) same = strcmp(tr.paths[i], tr2.paths[i]) == 0;
    CHECK(same);
    Dataset tr3;
    CHECK(dataset_split(&d, 0.7f, 0.15f, 6, &tr3, NULL, NULL) == 0);
    int differ = 0;
    for (int i = 0; i < tr.n && i < tr3.n; i++) differ |= strcmp(tr.paths[i], tr3.paths[i]) != 0;
    CHECK(differ);
    CHECK(dataset_split(&d, 0.9f, 0.2f, 5, &tr3, NULL, NULL) == -1);
    dataset_free(&tr);
    dataset_free(&va);
    dataset_free(&te);
    dataset_free(&tr2);
    dataset_free(&tr3);
    d.class_names = NULL;
    d.n_classes = 0;
    dataset_free(&d);
}

/* ---------------------------------------------------------------- loader */

static void run_epoch(Loader *l, int epoch, size_t per, float *all, int *labels, int *idx,
                      int *total) {
    loader_start_epoch(l, epoch);
    int n, t = 0;
    while ((n = loader_next(l, all + (size_t)t * per, labels + t, idx + t)) > 0) t += n;
    *total = t;
}

static void test_loader_deterministic(void) {
    mkdir_p(tpath("loader/a"));
    mkdir_p(tpath("loader/b"));
    for (int i = 0; i < 11; i++) {
        char name[64];
        snprintf(name, sizeof name, "loader/%s/%02d.png", i % 2 ? "a" : "b", i);
        write_png_file(tpath(name), 20 + i, 17, (uint8_t)(i * 20));
    }
    Dataset d;
    CHECK(dataset_from_folder(tpath("loader"), &d) == 0 && d.n == 11);
    /* corrupt one file after listing: the loader reports it and leaves it out */
    put_file(d.paths[3], "garbage", 7);
    Preprocess p = {PREP_TORCHVISION, 16, 0.875f};
    Augment a = augment_default();
    a.rotate_deg = 10;
    size_t per = 3 * 16 * 16;
    float *x1 = calloc(11 * per, sizeof(float)), *x2 = calloc(11 * per, sizeof(float));
    int l1[11], l2[11], i1[11], i2[11], n1, n2;
    Loader *one = loader_create(&d, &p, &a, 4, 1, 99, 1);
    Loader *two = loader_create(&d, &p, &a, 4, 1, 99, 3);
    run_epoch(one, 2, per, x1, l1, i1, &n1);
    run_epoch(two, 2, per, x2, l2, i2, &n2);
    CHECK(n1 == 10 && n2 == 10);
    CHECK(loader_failures(one) == 1 && loader_failures(two) == 1);
    CHECK(memcmp(i1, i2, sizeof(int) * 10) == 0 && memcmp(l1, l2, sizeof(int) * 10) == 0);
    CHECK(memcmp(x1, x2, 10 * per * sizeof(float)) == 0);
    CHECK(max_rel_diff(x1, x2, 10 * per, 1.0) == 0.0);
    int seen = 0;
    for (int i = 0; i < 10; i++) {
        seen |= 1 << i1[i];
        CHECK(l1[i] == d.labels[i1[i]]);
    }
    CHECK(seen == (0x7FF & ~(1 << 3)));
    /* another epoch: another order; the same epoch again: the same pixels */
    run_epoch(one, 3, per, x2, l2, i2, &n2);
    CHECK(n2 == 10 && memcmp(i1, i2, sizeof(int) * 10) != 0);
    run_epoch(two, 2, per, x2, l2, i2, &n2);
    CHECK(memcmp(x1, x2, 10 * per * sizeof(float)) == 0 && loader_failures(two) == 1);
    /* restart in the middle of an epoch */
    loader_start_epoch(two, 5);
    CHECK(loader_next(two, x2, l2, i2) > 0);
    run_epoch(two, 2, per, x2, l2, i2, &n2);
    CHECK(n2 == 10 && memcmp(x1, x2, 10 * per * sizeof(float)) == 0);
    loader_free(one);
    loader_free(two);
    /* no shuffle, eval: dataset order, pixels equal preprocess_image */
    Loader *ev = loader_create(&d, &p, NULL, 3, 0, 1, 0);
    run_epoch(ev, 0, per, x1, l1, i1, &n1);
    CHECK(n1 == 10 && i1[0] == 0 && i1[3] == 4);
    Image img;
    char why[128];
    CHECK(dataset_load_image(&d, 4, &img, why, sizeof why) == 0);
    preprocess_image(&img, &p, NULL, NULL, x2);
    image_free(&img);
    CHECK(memcmp(x1 + 3 * per, x2, per * sizeof(float)) == 0);
    loader_free(ev);
    free(x1);
    free(x2);
    dataset_free(&d);
}

/* ---------------------------------------------------------------- real data */

static const char *shared_or_skip(void) {
    const char *s = test_shared_dir();
    if (!s && getenv("REQUIRE_SHARED") && atoi(getenv("REQUIRE_SHARED"))) {
        fprintf(stderr, "  REQUIRE_SHARED=1 but the shared data folder (SHARED=%s) is missing\n",
                getenv("SHARED") ? getenv("SHARED") : "../shared");
        test_case_failed = 1;
    }
    return s;
}

static void test_shared_hymenoptera(void) {
    const char *s = shared_or_skip();
    if (!s) {
        if (test_case_failed) return;
        SKIP("../shared not present");
    }
    char p[1024];
    snprintf(p, sizeof p, "%s/data/hymenoptera/train", s);
    Dataset tr, va;
    CHECK(dataset_from_folder(p, &tr) == 0);
    snprintf(p, sizeof p, "%s/data/hymenoptera/val", s);
    CHECK(dataset_from_folder_classes(p, tr.class_names, tr.n_classes, &va) == 0);
    int c[2][2] = {{0}};
    for (int i = 0; i < tr.n; i++) c[0][tr.labels[i]]++;
    for (int i = 0; i < va.n; i++) c[1][va.labels[i]]++;
    CHECK(tr.n_classes == 2 && strcmp(tr.class_names[0], "ants") == 0);
    CHECK(c[0][0] == 124 && c[0][1] == 121 && c[1][0] == 70 && c[1][1] == 83);
    CHECK(tr.n + va.n == 398 && tr.n_skipped == 0 && va.n_skipped == 0);
    int gif = -1;
    for (int i = 0; i < tr.n; i++)
        if (strstr(tr.paths[i], ".gif")) gif = i;
    CHECK(gif >= 0);
    if (gif >= 0) {
        Image img;
        char why[256];
        CHECK(dataset_load_image(&tr, gif, &img, why, sizeof why) == 0 && img.w == 300 &&
              img.h == 300);
        image_free(&img);
    }
    dataset_free(&tr);
    dataset_free(&va);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/rn_test_data_%ld", (long)getpid());
    if (mkdir_p(tmpdir) != 0) {
        fprintf(stderr, "%s\n", rn_error());
        return 1;
    }
    RUN(test_formats_decode);
    RUN(test_bad_inputs_rejected);
    RUN(test_pnm_hostile);
    RUN(test_jpeg_scan_tables);
    RUN(test_png_empty_idat);
    RUN(test_preprocess_numbers);
    RUN(test_center_crop_rounding);
    RUN(test_resize_matches_pil);
    RUN(test_augment_deterministic);
    RUN(test_folder_dataset);
    RUN(test_cifar_binary);
    RUN(test_csv_dataset);
    RUN(test_folder_symlinks);
    RUN(test_folder_names);
    RUN(test_csv_hostile);
    RUN(test_split_stratified);
    RUN(test_loader_deterministic);
    RUN(test_shared_hymenoptera);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return test_summary();
}
