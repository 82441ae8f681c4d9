/* data.c - image decoding, datasets, preprocessing, augmentation, splits and the loader.
 *
 * Decoding is stb_image (Debian's libstb-dev, /usr/include/stb; see third_party/README.md),
 * compiled here as private static functions, always from memory and with size caps
 * checked on the header before any pixel buffer is allocated. PNG output is
 * stb_image_write. Resizing is Pillow's bilinear resampling, reproduced exactly (what
 * torchvision's Resize does to PIL images), rather than stb_image_resize: its 0.97
 * triangle filter aborts on an assertion for ratios such as 50 -> 33. */
#include "resnet.h"
#include "platform.h"
#include "dist.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* stb, private to this file. check_header() applies RN_MAX_IMAGE_SIDE to every header
 * before stb decodes it; STBI_MAX_DIMENSIONS (stb_image >= 2.26) is a second fence inside
 * the decoders, set wider so that the header check can say which size was found. */
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic ignored "-Wunused-function" /* stb declares a few it never defines */
#endif
#define STBI_MAX_DIMENSIONS    (1 << 16)
#define STBI_MALLOC(bytes)     malloc(bytes) /* decoded pixels are handed over as Image.rgb */
#define STBI_REALLOC(p, bytes) realloc(p, bytes)
#define STBI_FREE(p)           free(p)
#define STBI_NO_STDIO
#define STBI_NO_HDR
#define STBI_NO_LINEAR
#define STBI_NO_PIC
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>

/* Allocation follows rn_alloc's policy (rn_realloc for growing arrays): it never returns
 * NULL, exhaustion is fatal with a message. Every block, whoever allocated it (stb,
 * read_file, rn_strdup), is released with rn_free, which is free(). */
#define RN_MAX_FILE_BYTES ((size_t)1 << 30) /* larger files are not read at all */
#define PROBE_BYTES       4096              /* enough for every header except big EXIF */
#define CIFAR_SIDE        32
#define CIFAR_PIXELS      (CIFAR_SIDE * CIFAR_SIDE * 3)

/* ------------------------------------------------------------------------------------ */
/* Decoding                                                                              */
/* ------------------------------------------------------------------------------------ */

/* Read at most max bytes of path (the whole file when max == 0). Thread-safe: the reason
 * goes to why, never to the global error line. Caller frees. */
static uint8_t *read_capped(const char *path, size_t max, size_t *len, size_t *file_size, char *why,
                            size_t why_len) {
    int fd = open(path, O_RDONLY | RN_O_BINARY);
    if (fd < 0) {
        snprintf(why, why_len, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, why_len, "not a regular file");
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    if (file_size) *file_size = size;
    if (size > RN_MAX_FILE_BYTES) {
        snprintf(why, why_len, "file of %zu bytes exceeds the %zu-byte limit", size,
                 RN_MAX_FILE_BYTES);
        close(fd);
        return NULL;
    }
    size_t want = max && max < size ? max : size;
    uint8_t *buf = malloc(want + 1);
    if (!buf) {
        snprintf(why, why_len, "cannot allocate %zu bytes to read it", want);
        close(fd);
        return NULL;
    }
    size_t got = 0;
    while (got < want) {
        ssize_t r = read(fd, buf + got, want - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    if (got < want) {
        snprintf(why, why_len, "short read (%zu of %zu bytes)", got, want);
        rn_free(buf);
        return NULL;
    }
    *len = got;
    return buf;
}

static const char *format_name(const uint8_t *b, size_t n) {
    if (n >= 2 && b[0] == 0xFF) { /* SOI, after any 0xFF fill bytes as stb allows */
        size_t i = 1;
        while (i < n && b[i] == 0xFF) i++;
        if (i < n && b[i] == 0xD8) return "JPEG";
    }
    if (n >= 8 && memcmp(b, "\x89PNG\r\n\x1a\n", 8) == 0) return "PNG";
    if (n >= 4 && memcmp(b, "GIF8", 4) == 0) return "GIF";
    if (n >= 2 && b[0] == 'B' && b[1] == 'M') return "BMP";
    if (n >= 4 && memcmp(b, "8BPS", 4) == 0) return "PSD";
    if (n >= 2 && b[0] == 'P' && b[1] >= '1' && b[1] <= '7') return "PNM";
    if (n >= 4 && memcmp(b, "RIFF", 4) == 0) return "RIFF (WebP?)";
    return NULL;
}

/* stbi_failure_reason() (short internal codes, thread-local) as a readable line. */
static void failure_text(const uint8_t *buf, size_t len, char *why, size_t why_len) {
    const char *r = stbi_failure_reason();
    const char *fmt = format_name(buf, len);
    if (!r) r = "unknown error";
    if (strcmp(r, "outofmem") == 0) {
        snprintf(why, why_len, "out of memory decoding %s", fmt ? fmt : "image");
    } else if (!fmt || strcmp(r, "unknown image type") == 0) {
        if (fmt && buf[0] == 'P')
            snprintf(why, why_len, "unsupported PNM variant (only binary P5/P6)");
        else if (fmt && buf[0] == 'R')
            snprintf(why, why_len, "unsupported format %s", fmt);
        else if (fmt)
            snprintf(why, why_len, "unsupported or corrupt %s (%s)", fmt, r);
        else
            snprintf(why, why_len, "not an image (unknown format)");
    } else if (strcmp(r, "too large") == 0) {
        snprintf(why, why_len, "%s dimensions exceed the %d-pixel limit", fmt, RN_MAX_IMAGE_SIDE);
    } else if (strcmp(r, "only 8-bit") == 0 || strcmp(r, "1/2/4/8/16-bit only") == 0 ||
               strcmp(r, "bad ctype") == 0 || strcmp(r, "bad compression") == 0 ||
               strcmp(r, "bad interlace method") == 0) {
        snprintf(why, why_len, "unsupported %s variant (%s)", fmt, r);
    } else {
        snprintf(why, why_len, "truncated or corrupt %s (%s)", fmt, r);
    }
}

static uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t be32(const uint8_t *p) { return be16(p) << 16 | be16(p + 2); }
static uint32_t le16(const uint8_t *p) { return (uint32_t)p[1] << 8 | p[0]; }
static uint32_t le32(const uint8_t *p) { return le16(p + 2) << 16 | le16(p); }

/* The size a header claims, read before stb sees it (stb's own info call fails without
 * saying the size when it is over its limits). 0 when the header is not understood. */
static int header_size(const uint8_t *b, size_t n, int64_t *w, int64_t *h) {
    const char *fmt = format_name(b, n);
    if (!fmt) return 0;
    if (fmt[0] == 'P' && fmt[1] == 'N' && fmt[2] == 'G' && n >= 24) {
        *w = be32(b + 16);
        *h = be32(b + 20);
    } else if (fmt[0] == 'G' && n >= 10) {
        *w = le16(b + 6);
        *h = le16(b + 8);
    } else if (fmt[0] == 'B' && n >= 26) {
        *w = (int32_t)le32(b + 18);
        *h = (int32_t)le32(b + 22);
        if (*h < 0) *h = -*h;
    } else if (fmt[0] == 'P' && fmt[1] == 'S' && n >= 22) {
        *h = be32(b + 14);
        *w = be32(b + 18);
    } else if (fmt[0] == 'J') {
        /* walk the marker segments up to the frame header (SOF0..SOF15 but DHT/JPG/DAC) */
        size_t i = 0;
        while (i < n && b[i] == 0xFF) i++;
        i++; /* past SOI */
        while (i + 9 <= n) {
            if (b[i] != 0xFF) return 0;
            uint8_t m = b[i + 1];
            if (m == 0xFF) {
                i++;
                continue;
            }
            if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
                *h = be16(b + i + 5);
                *w = be16(b + i + 7);
                return 1;
            }
            i += 2 + be16(b + i + 2);
        }
        return 0;
    } else {
        return 0;
    }
    return 1;
}

static int size_ok(int64_t w, int64_t h, char *why, size_t why_len) {
    if (w > RN_MAX_IMAGE_SIDE || h > RN_MAX_IMAGE_SIDE) {
        snprintf(why, why_len, "image %lldx%lld exceeds the %d-pixel limit", (long long)w,
                 (long long)h, RN_MAX_IMAGE_SIDE);
        return 0;
    }
    if (w * h > RN_MAX_IMAGE_PIXELS) {
        snprintf(why, why_len, "image %lldx%lld exceeds the %d-pixel area limit", (long long)w,
                 (long long)h, RN_MAX_IMAGE_PIXELS);
        return 0;
    }
    return 1;
}

/* Binary PNM (P5 gray, P6 RGB) is parsed and decoded here, not by stb 2.27: its header
 * reader drops a number's last digit at the end of the buffer (maxval 70000 read as 7000:
 * 16-bit samples then converted as 8-bit, a heap over-read), has no overflow check, and
 * truncated pixel data decodes "fine" from uninitialised memory. The header is three
 * decimal numbers (width, height, maxval) after the magic, separated by whitespace and
 * '#' comments, then one whitespace byte, then w*h*channels samples: one byte each when
 * maxval < 256, else two, big-endian. */
typedef struct {
    int w, h, channels;
    long maxval;
    size_t data_at, data_bytes;
} PnmHeader;

/* 1 when the header parses (the pixel data may still be short), else 0 with why. */
static int pnm_header(const uint8_t *b, size_t n, PnmHeader *p, char *why, size_t why_len) {
    if (n < 2 || b[0] != 'P' || (b[1] != '5' && b[1] != '6')) {
        snprintf(why, why_len, "unsupported PNM variant (only binary P5/P6)");
        return 0;
    }
    long v[3];
    size_t i = 2;
    for (int field = 0; field < 3; field++) {
        for (;;) {
            while (i < n && (b[i] == ' ' || (b[i] >= '\t' && b[i] <= '\r'))) i++;
            if (i >= n || b[i] != '#') break;
            while (i < n && b[i] != '\n' && b[i] != '\r') i++;
        }
        int digits = 0;
        for (v[field] = 0; i < n && b[i] >= '0' && b[i] <= '9'; i++, digits++) {
            if (digits == 9) {
                snprintf(why, why_len, "corrupt PNM header (number with more than 9 digits)");
                return 0;
            }
            v[field] = v[field] * 10 + (b[i] - '0');
        }
        if (digits == 0 || i >= n || !(b[i] == ' ' || (b[i] >= '\t' && b[i] <= '\r'))) {
            snprintf(why, why_len,
                     "truncated or corrupt PNM header (expected width, height and maxval)");
            return 0;
        }
    }
    if (v[0] == 0 || v[1] == 0) {
        snprintf(why, why_len, "image %ldx%ld has no pixels", v[0], v[1]);
        return 0;
    }
    if (v[2] < 1 || v[2] > 65535) {
        snprintf(why, why_len, "corrupt PNM header (maxval %ld, expected 1..65535)", v[2]);
        return 0;
    }
    if (!size_ok(v[0], v[1], why, why_len)) return 0;
    p->w = (int)v[0];
    p->h = (int)v[1];
    p->channels = b[1] == '5' ? 1 : 3;
    p->maxval = v[2];
    p->data_at = i + 1;
    p->data_bytes = (size_t)p->w * p->h * p->channels * (p->maxval > 255 ? 2 : 1);
    return 1;
}

/* 1 when file_size bytes hold the header's pixel data, else 0 with why. */
static int pnm_complete(const PnmHeader *p, size_t file_size, char *why, size_t why_len) {
    if (file_size < p->data_at || file_size - p->data_at < p->data_bytes) {
        snprintf(why, why_len, "truncated PNM (%zu bytes of pixel data, %dx%d needs %zu)",
                 file_size > p->data_at ? file_size - p->data_at : 0, p->w, p->h, p->data_bytes);
        return 0;
    }
    return 1;
}

/* Samples scaled to 0..255 (v * 255 / maxval, rounded; values above maxval clamp). */
static uint8_t *pnm_decode(const uint8_t *b, const PnmHeader *p) {
    const uint8_t *s = b + p->data_at;
    size_t n = (size_t)p->w * p->h;
    int wide = p->maxval > 255;
    long m = p->maxval;
    uint8_t *px = rn_alloc(n * 3);
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < 3; c++) {
            size_t k = i * (size_t)p->channels + (p->channels == 3 ? (size_t)c : 0);
            long v = wide ? ((long)s[2 * k] << 8) | s[2 * k + 1] : s[k];
            v = v > m ? m : v;
            px[3 * i + c] = m == 255 ? (uint8_t)v : (uint8_t)((v * 255 + m / 2) / m);
        }
    return px;
}

/* stb_image 2.27 trusts what a JPEG's marker segments declare (found by tests/fuzz_decode.c
 * and stb issue 1535): symbol counts of a Huffman table summing past 256 overflow its
 * tables; a scan that uses a Huffman table the file never defined decodes from
 * uninitialised memory (different garbage, or different errors, run to run); a scan naming
 * a component the frame lacks fails with no reason at all. Walk the markers the way stb does
 * (resynchronising on 0xFF, skipping entropy-coded data to the next real marker) and refuse
 * such files with the reason. A progressive scan uses DC tables in its first DC pass
 * (Ss = 0, Ah = 0) and AC tables in its AC passes (Ss > 0); a sequential scan uses both. */
static int jpeg_segments_ok(const uint8_t *b, size_t n, char *why, size_t why_len) {
    size_t i = 0;
    int in_scan = 0, progressive = 0, n_comp = -1;
    uint8_t comp_id[4] = {0}, defined[2][4] = {{0}};
    while (i + 1 < n) {
        if (b[i] != 0xFF) {
            i++;
            continue;
        }
        uint8_t x = b[i + 1];
        if (x == 0xFF) {
            i++;
            continue;
        }
        if (in_scan && (x == 0 || (x >= 0xD0 && x <= 0xD7))) {
            i += 2;
            continue;
        }
        in_scan = 0;
        i += 2;
        if (x == 0xD9) break;
        if (x == 0 || x == 0x01 || x == 0xD8 || (x >= 0xD0 && x <= 0xD7)) continue;
        if (i + 2 > n) break;
        size_t seg = be16(b + i), end = i + seg < n ? i + seg : n;
        if (x == 0xC4) {
            size_t pos = i + 2;
            while (pos < i + seg && pos < n) {
                unsigned count = 0;
                for (int k = 0; k < 16; k++) count += pos + 1 + k < n ? b[pos + 1 + k] : 0;
                if (count > 256) {
                    snprintf(why, why_len,
                             "corrupt JPEG (Huffman table with more than 256 symbols)");
                    return 0;
                }
                int tc = b[pos] >> 4, th = b[pos] & 15;
                if (tc <= 1 && th <= 3) defined[tc][th] = 1;
                pos += 17 + count;
            }
        } else if (x >= 0xC0 && x <= 0xCF && x != 0xC4 && x != 0xC8 && x != 0xCC) {
            progressive = x == 0xC2;
            n_comp = i + 7 < end ? b[i + 7] : 0;
            if (n_comp > 4) n_comp = 4; /* stb refuses more */
            for (int k = 0; k < n_comp; k++)
                comp_id[k] = i + 8 + 3 * k < end ? b[i + 8 + 3 * k] : 0;
        } else if (x == 0xDA) {
            int ns = i + 2 < end ? b[i + 2] : 0;
            size_t tail = i + 3 + 2 * (size_t)ns;
            if (n_comp < 0 || ns < 1 || ns > 4 || tail + 2 >= end) {
                snprintf(why, why_len,
                         "corrupt JPEG (scan header before the frame header, or cut short)");
                return 0;
            }
            int ss = b[tail], ah = b[tail + 2] >> 4;
            int dc = !progressive || (ss == 0 && ah == 0), ac = !progressive || ss > 0;
            for (int k = 0; k < ns; k++) {
                int id = b[i + 3 + 2 * k], td = b[i + 4 + 2 * k] >> 4, ta = b[i + 4 + 2 * k] & 15;
                int found = 0;
                for (int c = 0; c < n_comp; c++) found |= comp_id[c] == id;
                if (!found) {
                    snprintf(why, why_len,
                             "corrupt JPEG (scan names component %d, not in the frame)", id);
                    return 0;
                }
                if ((dc && (td > 3 || !defined[0][td])) || (ac && (ta > 3 || !defined[1][ta]))) {
                    snprintf(why, why_len,
                             "corrupt JPEG (scan uses %s Huffman table %d, never defined)",
                             dc && (td > 3 || !defined[0][td]) ? "DC" : "AC",
                             dc && (td > 3 || !defined[0][td]) ? td : ta);
                    return 0;
                }
            }
            in_scan = 1;
        }
        i += seg;
    }
    return 1;
}

/* Header check: format known, size within RN_MAX_IMAGE_SIDE / RN_MAX_IMAGE_PIXELS. */
/* No format packs more than a few hundred pixels per byte in real files (flat PNG about
 * 350, flat GIF below 3000); more is a corrupt or hostile header, e.g. a 72-byte RLE TGA
 * claiming 13648x14602 pixels, which stb would happily expand into 600 MB. */
#define MAX_PIXELS_PER_BYTE 4096

/* file_size: the whole file's size (len may be only its first bytes, when probing). */
static int check_header(const uint8_t *buf, size_t len, size_t file_size, int *w, int *h, char *why,
                        size_t why_len) {
    if (len == 0) {
        snprintf(why, why_len, "empty file");
        return -1;
    }
    if (len > (size_t)INT32_MAX) {
        snprintf(why, why_len, "file too large");
        return -1;
    }
    int64_t cw, ch;
    if (header_size(buf, len, &cw, &ch) && !size_ok(cw, ch, why, why_len)) return -1;
    const char *fmt = format_name(buf, len);
    if (fmt && fmt[0] == 'J' && !jpeg_segments_ok(buf, len, why, why_len)) return -1;
    if (fmt && strcmp(fmt, "PNM") == 0) {
        PnmHeader pnm;
        if (!pnm_header(buf, len, &pnm, why, why_len) ||
            !pnm_complete(&pnm, file_size, why, why_len))
            return -1;
        *w = pnm.w;
        *h = pnm.h;
        return 0;
    }
    stbi__g_failure_reason = NULL; /* thread-local; a failure below must not name a stale one */
    int iw = 0, ih = 0, comp = 0;
    if (!stbi_info_from_memory(buf, (int)len, &iw, &ih, &comp)) {
        failure_text(buf, len, why, why_len);
        return -1;
    }
    if (iw <= 0 || ih <= 0) {
        snprintf(why, why_len, "image %dx%d has no pixels", iw, ih);
        return -1;
    }
    if (!size_ok(iw, ih, why, why_len)) return -1;
    if ((double)iw * ih > (double)file_size * MAX_PIXELS_PER_BYTE) {
        snprintf(why, why_len, "corrupt %s: %dx%d pixels cannot come from %zu bytes",
                 fmt ? fmt : "image", iw, ih, file_size);
        return -1;
    }
    *w = iw;
    *h = ih;
    return 0;
}

/* stb's JPEG decoder pads a truncated entropy stream with zeros and reports success, so a
 * cut-off JPEG would decode to a grey smear. A complete file has the EOI marker FF D9
 * after its last start-of-scan FF DA (the scan data byte-stuffs every FF). */
static int jpeg_is_complete(const uint8_t *b, size_t n) {
    size_t sos = 0;
    for (size_t i = n; i-- > 1;)
        if (b[i - 1] == 0xFF && b[i] == 0xDA) {
            sos = i;
            break;
        }
    if (!sos) return 0;
    for (size_t i = sos + 1; i + 1 < n; i++)
        if (b[i] == 0xFF && b[i + 1] == 0xD9) return 1;
    return 0;
}

/* stb_image 2.27 appends a zero-length first IDAT chunk to its NULL buffer (pointer
 * arithmetic on NULL: undefined behaviour, stopped by UBSan). Such chunks are legal and
 * carry no data, so a copy without them decodes to the same image. The chunks are walked
 * while they fit in the file; what follows (a cut-off chunk) is kept as it is, for stb to
 * report. NULL when there is no empty IDAT. */
static uint8_t *png_without_empty_idat(const uint8_t *b, size_t n, size_t *out_len) {
    size_t i = 8, end = 8;
    int empty = 0;
    for (; i + 12 <= n && be32(b + i) <= n - i - 12; i += 12 + (size_t)be32(b + i))
        empty |= be32(b + i) == 0 && memcmp(b + i + 4, "IDAT", 4) == 0;
    end = i;
    if (!empty) return NULL;
    uint8_t *out = rn_alloc(n);
    memcpy(out, b, 8);
    size_t o = 8;
    for (i = 8; i < end; i += 12 + (size_t)be32(b + i)) {
        size_t chunk = 12 + (size_t)be32(b + i);
        if (chunk == 12 && memcmp(b + i + 4, "IDAT", 4) == 0) continue;
        memcpy(out + o, b + i, chunk);
        o += chunk;
    }
    memcpy(out + o, b + end, n - end);
    *out_len = o + n - end;
    return out;
}

/* stb_image allocates a chunk's claimed length before reading it (a 200-byte file claiming
 * a 2 GB IDAT asks for 2 GB). Every chunk up to IEND must fit in the file with its CRC; one
 * that does not is a truncated or corrupt file, which stb would refuse after allocating,
 * so refusing it first changes no result. */
static int png_chunks_fit(const uint8_t *b, size_t n, char *why, size_t why_len) {
    for (size_t i = 8; i + 8 <= n;) {
        size_t claimed = be32(b + i);
        if (claimed + 4 > n - i - 8) {
            char type[5];
            for (int k = 0; k < 4; k++) {
                uint8_t c = b[i + 4 + k];
                type[k] = c >= 32 && c < 127 ? (char)c : '?';
            }
            type[4] = 0;
            snprintf(why, why_len,
                     "truncated or corrupt PNG: chunk '%s' at byte %zu claims %zu bytes, the file "
                     "has %zu left",
                     type, i, claimed, n - i - 8);
            return -1;
        }
        if (memcmp(b + i + 4, "IEND", 4) == 0) break;
        i += 12 + claimed;
    }
    return 0;
}

/* stb_image 2.27 "removes a white matte" from a PSD with an alpha channel (4 or more
 * channels): c' = (c - 255 (1 - a)) / a, converted to an 8- or 16-bit integer unclamped.
 * A pixel darker than the matte it assumes overflows that conversion, which C leaves
 * undefined (found by tests/fuzz_decode.c; Pillow, torchvision's decoder, keeps the
 * stored colours instead). Such files are refused, not decoded to garbage. */
static int psd_supported(const uint8_t *b, size_t len, char *why, size_t why_len) {
    if (len >= 14 && be16(b + 12) >= 4) {
        snprintf(why, why_len,
                 "PSD with %u channels (an alpha channel) is not supported (stb_image's "
                 "un-matting of it is undefined for dark pixels): save it as PNG",
                 (unsigned)be16(b + 12));
        return -1;
    }
    return 0;
}

int image_decode_memory(const uint8_t *buf, size_t len, Image *img, char *why, size_t why_len) {
    img->w = img->h = 0;
    img->rgb = NULL;
    int w, h, comp;
    if (check_header(buf, len, len, &w, &h, why, why_len) != 0) return -1;
    const char *fmt = format_name(buf, len);
    if (fmt && strcmp(fmt, "JPEG") == 0 && !jpeg_is_complete(buf, len)) {
        snprintf(why, why_len, "truncated or corrupt JPEG (no end-of-image marker)");
        return -1;
    }

    /* req_comp = 3: gray is replicated, alpha dropped, 16-bit reduced to its high byte,
     * palettes expanded, GIF's first frame. */
    uint8_t *px;
    if (fmt && strcmp(fmt, "PNM") == 0) {
        PnmHeader pnm;
        pnm_header(buf, len, &pnm, why, why_len); /* check_header parsed it */
        px = pnm_decode(buf, &pnm);
    } else {
        size_t png_len = 0;
        if (fmt && strcmp(fmt, "PNG") == 0 && png_chunks_fit(buf, len, why, why_len) != 0)
            return -1;
        if (fmt && strcmp(fmt, "PSD") == 0 && psd_supported(buf, len, why, why_len) != 0)
            return -1;
        uint8_t *png =
            fmt && strcmp(fmt, "PNG") == 0 ? png_without_empty_idat(buf, len, &png_len) : NULL;
        stbi__g_failure_reason = NULL;
        px = png ? stbi_load_from_memory(png, (int)png_len, &w, &h, &comp, 3)
                 : stbi_load_from_memory(buf, (int)len, &w, &h, &comp, 3);
        rn_free(png);
        if (!px) {
            failure_text(buf, len, why, why_len);
            return -1;
        }
    }
    img->rgb = px; /* stb allocates with malloc (STBI_MALLOC above): image_free frees it */
    img->w = w;
    img->h = h;
    return 0;
}

static int decode_file(const char *path, Image *img, char *why, size_t why_len) {
    size_t len = 0;
    img->w = img->h = 0;
    img->rgb = NULL;
    uint8_t *buf = read_capped(path, 0, &len, NULL, why, why_len);
    if (!buf) return -1;
    int rc = image_decode_memory(buf, len, img, why, why_len);
    rn_free(buf);
    return rc;
}

int image_decode_file(const char *path, Image *img, char *why, size_t why_len) {
    if (decode_file(path, img, why, why_len) != 0) {
        rn_set_error("%s: %s", path, why);
        return -1;
    }
    return 0;
}

/* Reads the first 4 KB; a JPEG whose frame header lies deeper (large EXIF/ICC blocks), or a
 * PNM with long comments, gets a second try with the whole file. */
static int probe_file(const char *path, int *w, int *h, char *why, size_t why_len) {
    size_t len = 0, size = 0;
    uint8_t *buf = read_capped(path, PROBE_BYTES, &len, &size, why, why_len);
    if (!buf) return -1;
    int rc = check_header(buf, len, size, w, h, why, why_len);
    const char *fmt = format_name(buf, len);
    if (rc != 0 && size > len && fmt && (strcmp(fmt, "JPEG") == 0 || strcmp(fmt, "PNM") == 0)) {
        rn_free(buf);
        buf = read_capped(path, 0, &len, NULL, why, why_len);
        if (!buf) return -1;
        rc = check_header(buf, len, size, w, h, why, why_len);
    }
    rn_free(buf);
    return rc;
}

int image_probe_file(const char *path, int *w, int *h, char *why, size_t why_len) {
    if (probe_file(path, w, h, why, why_len) != 0) {
        rn_set_error("%s: %s", path, why);
        return -1;
    }
    return 0;
}

void image_free(Image *img) {
    rn_free(img->rgb);
    img->rgb = NULL;
    img->w = img->h = 0;
}

int image_write_png(const char *path, const Image *img) {
    int len = 0;
    uint8_t *png = stbi_write_png_to_mem(img->rgb, img->w * 3, img->w, img->h, 3, &len);
    if (!png) {
        rn_set_error("%s: cannot encode %dx%d PNG", path, img->w, img->h);
        return -1;
    }
    int rc = write_file_atomic(path, png, (size_t)len);
    STBIW_FREE(png);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* Preprocessing and augmentation                                                        */
/* ------------------------------------------------------------------------------------ */

Augment augment_default(void) {
    /* torchvision's RandomResizedCrop(size) + RandomHorizontalFlip(), as in the PyTorch
     * transfer-learning tutorial: scale 0.08..1, ratio 3/4..4/3. */
    Augment a = {0};
    a.enabled = 1;
    a.scale_min = 0.08f;
    a.scale_max = 1.0f;
    a.ratio_min = 3.0f / 4.0f;
    a.ratio_max = 4.0f / 3.0f;
    a.hflip = 1;
    return a;
}

static const char *prep_names[] = {"torchvision", "caffe", "unit"};

int prep_parse(const char *name, PrepKind *kind) {
    for (int i = 0; i < 3; i++)
        if (strcmp(name, prep_names[i]) == 0) {
            *kind = (PrepKind)i;
            return 0;
        }
    rn_set_error("preprocess: expected torchvision, caffe or unit, found '%s'", name);
    return -1;
}

const char *prep_name(PrepKind kind) { return (unsigned)kind < 3 ? prep_names[kind] : "unknown"; }

/* Python's round(twice / 2) for twice >= 0: halves go to the even neighbour. */
static int half_to_even(int twice) {
    int q = twice / 2;
    return twice % 2 == 0 || q % 2 == 0 ? q : q + 1;
}

/* torchvision CenterCrop offsets: round((in - out) / 2), or a zero pad of
 * (out - in) // 2 when the image is smaller. */
static int center_offset(int in, int out) {
    return in >= out ? half_to_even(in - out) : -((out - in) / 2);
}

/* Pillow's bilinear resampling (libImaging/Resample.c), which torchvision's Resize and
 * RandomResizedCrop use on PIL images, step for step so that the bytes match: separable,
 * horizontal pass first into 8-bit rows, then vertical; a triangle kernel stretched by
 * the scale when shrinking (antialiased); weights normalised per output pixel and
 * rounded to 22-bit fixed point; each pass rounds to 8 bits. */
#define PIL_PRECISION_BITS 22

/* Taps of each output position: source range [lo, lo + count), fixed-point weights. */
static int pil_coeffs(int in_size, int out_size, int **bounds, int32_t **weights) {
    double scale = (double)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    int *b = rn_alloc((size_t)out_size * 2 * sizeof *b);
    int32_t *k = rn_alloc((size_t)out_size * ksize * sizeof *k);
    double *tmp = rn_alloc((size_t)ksize * sizeof *tmp);
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            double t = fabs((x + xmin - center + 0.5) * ss);
            tmp[x] = t < 1.0 ? 1.0 - t : 0.0;
            ww += tmp[x];
        }
        for (int x = 0; x < ksize; x++) {
            double w = x < xmax && ww != 0.0 ? tmp[x] / ww : 0.0;
            k[xx * ksize + x] = (int32_t)(0.5 + w * (1 << PIL_PRECISION_BITS));
        }
        b[xx * 2] = xmin;
        b[xx * 2 + 1] = xmax;
    }
    rn_free(tmp);
    *bounds = b;
    *weights = k;
    return ksize;
}

static uint8_t pil_clip8(int32_t v) {
    if (v >= (1 << PIL_PRECISION_BITS << 8)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> PIL_PRECISION_BITS);
}

/* Resize the w x h RGB region at src (row stride `stride` bytes) to ow x oh. */
static void resize_rgb(const uint8_t *src, int w, int h, int stride, uint8_t *dst, int ow, int oh) {
    int *hb, *vb;
    int32_t *hk, *vk;
    int hks = pil_coeffs(w, ow, &hb, &hk), vks = pil_coeffs(h, oh, &vb, &vk);
    /* rows the vertical pass reads */
    int y_first = vb[0], y_last = vb[(oh - 1) * 2] + vb[(oh - 1) * 2 + 1];
    int need_h = ow != w, need_v = oh != h;
    const uint8_t *rows = src + (size_t)(need_h ? y_first : 0) * stride;
    int rows_stride = stride;
    uint8_t *tmp = NULL;
    if (need_h) {
        int th = y_last - y_first;
        tmp = rn_alloc((size_t)ow * (th > 0 ? th : 1) * 3);
        for (int y = 0; y < th; y++) {
            const uint8_t *in = rows + (size_t)y * stride;
            for (int xx = 0; xx < ow; xx++) {
                const int32_t *k = hk + xx * hks;
                int lo = hb[xx * 2], cnt = hb[xx * 2 + 1];
                for (int c = 0; c < 3; c++) {
                    int32_t acc = 1 << (PIL_PRECISION_BITS - 1);
                    for (int x = 0; x < cnt; x++) acc += in[(lo + x) * 3 + c] * k[x];
                    tmp[((size_t)y * ow + xx) * 3 + c] = pil_clip8(acc);
                }
            }
        }
        rows = tmp;
        rows_stride = ow * 3;
        for (int i = 0; i < oh; i++) vb[i * 2] -= y_first;
    }
    if (need_v) {
        for (int yy = 0; yy < oh; yy++) {
            const int32_t *k = vk + yy * vks;
            int lo = vb[yy * 2], cnt = vb[yy * 2 + 1];
            for (int i = 0; i < ow * 3; i++) {
                int32_t acc = 1 << (PIL_PRECISION_BITS - 1);
                for (int y = 0; y < cnt; y++)
                    acc += rows[(size_t)(lo + y) * rows_stride + i] * k[y];
                dst[(size_t)yy * ow * 3 + i] = pil_clip8(acc);
            }
        }
    } else {
        for (int y = 0; y < oh; y++)
            memcpy(dst + (size_t)y * ow * 3, rows + (size_t)y * rows_stride, (size_t)ow * 3);
    }
    rn_free(tmp);
    rn_free(hb);
    rn_free(hk);
    rn_free(vb);
    rn_free(vk);
}

void image_resize(const Image *src, int w, int h, Image *dst) {
    dst->w = w;
    dst->h = h;
    dst->rgb = rn_alloc((size_t)w * h * 3);
    resize_rgb(src->rgb, src->w, src->h, src->w * 3, dst->rgb, w, h);
}

static void buf_writer(void *ctx, void *data, int size) { buf_put(ctx, data, (size_t)size); }

int image_encode(const Image *img, int jpeg_quality, Buf *out) {
    int ok =
        jpeg_quality > 0
            ? stbi_write_jpg_to_func(buf_writer, out, img->w, img->h, 3, img->rgb, jpeg_quality)
            : stbi_write_png_to_func(buf_writer, out, img->w, img->h, 3, img->rgb, img->w * 3);
    if (!ok) {
        rn_set_error("cannot encode a %dx%d %s", img->w, img->h, jpeg_quality > 0 ? "JPEG" : "PNG");
        return -1;
    }
    return 0;
}

/* HWC 0..255 floats -> CHW by the convention. */
static void normalize_chw(const float *hwc, int size, PrepKind kind, float *out) {
    static const float tv_mean[3] = {0.485f, 0.456f, 0.406f};
    static const float tv_std[3] = {0.229f, 0.224f, 0.225f};
    static const float caffe_mean_bgr[3] = {103.939f, 116.779f, 123.68f};
    size_t plane = (size_t)size * size;
    for (int c = 0; c < 3; c++) {
        float *o = out + c * plane;
        for (size_t i = 0; i < plane; i++) {
            if (kind == PREP_CAFFE) {
                o[i] = hwc[i * 3 + (2 - c)] - caffe_mean_bgr[c]; /* channel c of BGR */
            } else if (kind == PREP_UNIT) {
                o[i] = hwc[i * 3 + c] / 255.0f;
            } else {
                o[i] = (hwc[i * 3 + c] / 255.0f - tv_mean[c]) / tv_std[c];
            }
        }
    }
}

static float uniform_in(Rng *r, float lo, float hi) { return lo + (hi - lo) * rng_uniform(r); }

/* torchvision RandomResizedCrop.get_params: 10 tries of a random area and log-uniform
 * aspect ratio, then a center crop clamped to the ratio range. */
static void random_resized_crop(Rng *r, int width, int height, const Augment *a, int *top,
                                int *left, int *ch, int *cw) {
    double area = (double)width * height;
    double lr0 = log(a->ratio_min), lr1 = log(a->ratio_max);
    for (int t = 0; t < 10; t++) {
        double target = area * uniform_in(r, a->scale_min, a->scale_max);
        double ratio = exp(lr0 + (lr1 - lr0) * rng_uniform(r));
        int w = (int)lround(sqrt(target * ratio));
        int h = (int)lround(sqrt(target / ratio));
        if (w > 0 && w <= width && h > 0 && h <= height) {
            *top = (int)rng_below(r, (uint32_t)(height - h + 1));
            *left = (int)rng_below(r, (uint32_t)(width - w + 1));
            *ch = h;
            *cw = w;
            return;
        }
    }
    double in_ratio = (double)width / height;
    int w = width, h = height;
    if (in_ratio < a->ratio_min)
        h = (int)lround(w / a->ratio_min);
    else if (in_ratio > a->ratio_max)
        w = (int)lround(h * a->ratio_max);
    if (h > height) h = height;
    if (w > width) w = width;
    *top = (height - h) / 2;
    *left = (width - w) / 2;
    *ch = h;
    *cw = w;
}

/* Rotation by deg and translation (tx, ty) about the image center, bilinear sampling,
 * zero fill outside (torchvision RandomAffine/RandomRotation with fill=0). */
static void rotate_translate(const float *src, int size, float deg, float tx, float ty,
                             float *dst) {
    double th = deg * 3.14159265358979323846 / 180.0, cs = cos(th), sn = sin(th);
    double cx = (size - 1) * 0.5, cy = (size - 1) * 0.5;
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++) {
            /* inverse map: output pixel -> source position */
            double dx = x - cx - tx, dy = y - cy - ty;
            double sx = cs * dx + sn * dy + cx, sy = -sn * dx + cs * dy + cy;
            int x0 = (int)floor(sx), y0 = (int)floor(sy);
            double fx = sx - x0, fy = sy - y0;
            float *o = dst + ((size_t)y * size + x) * 3;
            for (int c = 0; c < 3; c++) {
                double v = 0;
                for (int k = 0; k < 4; k++) {
                    int xx = x0 + (k & 1), yy = y0 + (k >> 1);
                    double wgt = ((k & 1) ? fx : 1 - fx) * ((k >> 1) ? fy : 1 - fy);
                    if (xx >= 0 && xx < size && yy >= 0 && yy < size && wgt > 0)
                        v += wgt * src[((size_t)yy * size + xx) * 3 + c];
                }
                o[c] = (float)v;
            }
        }
}

void preprocess_image(const Image *img, const Preprocess *p, const Augment *aug, Rng *rng,
                      float *out) {
    int size = p->size;
    size_t npx = (size_t)size * size;
    uint8_t *crop = rn_alloc(npx * 3);
    float *hwc = rn_alloc(npx * 3 * sizeof(float));
    int augment = aug && aug->enabled && rng;
    if (augment) {
        int top, left, ch, cw;
        random_resized_crop(rng, img->w, img->h, aug, &top, &left, &ch, &cw);
        resize_rgb(img->rgb + ((size_t)top * img->w + left) * 3, cw, ch, img->w * 3, crop, size,
                   size);
    } else {
        /* torchvision Resize(int(size / crop_pct)) then CenterCrop(size): the shorter side
         * becomes s, the other int(s * long / short). (1e-4 absorbs float crop_pct.) */
        double pct = p->crop_pct > 0 ? p->crop_pct : 1.0;
        int s = (int)floor(size / pct + 1e-4);
        if (s < 1) s = 1;
        int rw, rh;
        if (img->w <= img->h) {
            rw = s;
            rh = (int)((double)s * img->h / img->w);
        } else {
            rh = s;
            rw = (int)((double)s * img->w / img->h);
        }
        uint8_t *resized = (uint8_t *)img->rgb;
        if (rw != img->w || rh != img->h) {
            resized = rn_alloc((size_t)rw * rh * 3);
            resize_rgb(img->rgb, img->w, img->h, img->w * 3, resized, rw, rh);
        }
        int top = center_offset(rh, size), left = center_offset(rw, size);
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++) {
                int sy = y + top, sx = x + left;
                uint8_t *o = crop + ((size_t)y * size + x) * 3;
                if (sy >= 0 && sy < rh && sx >= 0 && sx < rw)
                    memcpy(o, resized + ((size_t)sy * rw + sx) * 3, 3);
                else
                    o[0] = o[1] = o[2] = 0;
            }
        if (resized != img->rgb) rn_free(resized);
    }
    for (size_t i = 0; i < npx * 3; i++) hwc[i] = crop[i];
    if (augment) {
        /* Draw order is fixed: crop (above), flip, rotation, translation, brightness,
         * contrast; a disabled transform draws nothing. */
        if (aug->hflip && rng_uniform(rng) < 0.5f) {
            for (int y = 0; y < size; y++)
                for (int x = 0; x < size / 2; x++)
                    for (int c = 0; c < 3; c++) {
                        float *a = hwc + ((size_t)y * size + x) * 3 + c;
                        float *b = hwc + ((size_t)y * size + (size - 1 - x)) * 3 + c;
                        float t = *a;
                        *a = *b;
                        *b = t;
                    }
        }
        float deg = 0, tx = 0, ty = 0;
        if (aug->rotate_deg > 0) deg = uniform_in(rng, -aug->rotate_deg, aug->rotate_deg);
        if (aug->translate > 0) {
            float m = aug->translate * size;
            tx = roundf(uniform_in(rng, -m, m));
            ty = roundf(uniform_in(rng, -m, m));
        }
        if (deg != 0 || tx != 0 || ty != 0) {
            float *tmp = rn_alloc(npx * 3 * sizeof(float));
            rotate_translate(hwc, size, deg, tx, ty, tmp);
            memcpy(hwc, tmp, npx * 3 * sizeof(float));
            rn_free(tmp);
        }
        /* ColorJitter: brightness x*f; contrast blends with the mean grey level. */
        if (aug->brightness > 0) {
            float f = uniform_in(rng, 1 - aug->brightness, 1 + aug->brightness);
            for (size_t i = 0; i < npx * 3; i++) hwc[i] = fminf(fmaxf(hwc[i] * f, 0), 255);
        }
        if (aug->contrast > 0) {
            float f = uniform_in(rng, 1 - aug->contrast, 1 + aug->contrast);
            double grey = 0;
            for (size_t i = 0; i < npx; i++)
                grey += 0.299 * hwc[i * 3] + 0.587 * hwc[i * 3 + 1] + 0.114 * hwc[i * 3 + 2];
            float mean = (float)(grey / npx);
            for (size_t i = 0; i < npx * 3; i++)
                hwc[i] = fminf(fmaxf(f * hwc[i] + (1 - f) * mean, 0), 255);
        }
    }
    normalize_chw(hwc, size, p->kind, out);
    rn_free(crop);
    rn_free(hwc);
}

/* ------------------------------------------------------------------------------------ */
/* Datasets                                                                              */
/* ------------------------------------------------------------------------------------ */

static const char *image_exts[] = {"jpg", "jpeg", "png", "bmp", "gif",
                                   "tga", "ppm",  "pgm", "pnm", "psd"};

static int has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    for (size_t i = 0; i < sizeof image_exts / sizeof *image_exts; i++)
        if (strcasecmp(dot + 1, image_exts[i]) == 0) return 1;
    return 0;
}

typedef struct {
    char **s;
    int n, cap;
} StrList;

static void strlist_push(StrList *l, char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->s = rn_realloc(l->s, (size_t)l->cap * sizeof *l->s);
    }
    l->s[l->n++] = s;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* torchvision's order: by directory, then by file name (sorted(os.walk), sorted(fnames)). */
static int cmp_path(const void *a, const void *b) {
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    const char *sx = strrchr(x, '/'), *sy = strrchr(y, '/');
    size_t dx = sx ? (size_t)(sx - x) : 0, dy = sy ? (size_t)(sy - y) : 0;
    size_t dm = dx < dy ? dx : dy;
    int c = strncmp(x, y, dm);
    if (c != 0) return c;
    if (dx != dy) return dx < dy ? -1 : 1;
    return strcmp(x + dx, y + dy);
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* The folders a listing has entered, by (device, inode): a symlink back up the tree
 * (cat/self -> ., cat/up -> ..) or across to another class folder is entered once only,
 * so no image is listed twice or under another class. */
typedef struct {
    uint64_t *dev, *ino;
    int n, cap;
} Visited;

/* 1 when dir was not visited before (it is now), 0 when it was, -1 when it cannot be
 * examined. */
static int visit(Visited *v, const char *dir) {
    RnFileInfo fi;
    if (rn_file_info(dir, &fi) != 0) return -1;
    for (int i = 0; i < v->n; i++)
        if (v->dev[i] == fi.dev && v->ino[i] == fi.ino) return 0;
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 16;
        v->dev = rn_realloc(v->dev, (size_t)v->cap * sizeof *v->dev);
        v->ino = rn_realloc(v->ino, (size_t)v->cap * sizeof *v->ino);
    }
    v->dev[v->n] = fi.dev;
    v->ino[v->n++] = fi.ino;
    return 1;
}

static void visited_free(Visited *v) {
    rn_free(v->dev);
    rn_free(v->ino);
}

/* Image files under dir (recursively, hidden entries skipped), unsorted. dir itself must
 * already be in visited. */
static int list_images(const char *dir, int depth, Visited *visited, StrList *out) {
    DIR *dp = opendir(dir);
    if (!dp) {
        rn_set_error("%s: cannot open directory: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(dp)) != NULL) {
        if (e->d_name[0] == '.') continue;
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *p = rn_alloc(n);
        snprintf(p, n, "%s/%s", dir, e->d_name);
        int sub = 0;
#ifdef DT_DIR
        if (e->d_type == DT_DIR)
            sub = 1;
        else if (e->d_type == DT_UNKNOWN || e->d_type == DT_LNK)
            sub = is_dir(p);
#else
        sub = is_dir(p);
#endif
        if (sub) {
            if (depth >= 16) {
                fprintf(stderr, "warning: %s: skipped, more than 16 folders deep\n", p);
            } else if (visit(visited, p) == 0) {
                fprintf(stderr,
                        "warning: %s: skipped, a folder already listed (a symlink "
                        "loop, or a link to another class)\n",
                        p);
            } else if (list_images(p, depth + 1, visited, out) != 0) {
                rn_free(p);
                closedir(dp);
                return -1;
            }
            rn_free(p);
        } else if (has_image_ext(e->d_name)) {
            strlist_push(out, p);
        } else {
            rn_free(p);
        }
    }
    closedir(dp);
    return 0;
}

/* Class names end up in JSON (model files, metrics.json), which must be UTF-8. */
static int class_name_ok(const char *where, const char *name) {
    size_t n = strlen(name);
    if (utf8_valid_len((const uint8_t *)name, n) == n) return 1;
    Buf b = {0};
    for (const unsigned char *c = (const unsigned char *)name; *c; c++) {
        if (*c >= 0x20 && *c < 0x7f)
            buf_put(&b, c, 1);
        else
            buf_printf(&b, "\\x%02x", *c);
    }
    rn_set_error("%s: class name '%s' is not valid UTF-8 (rename it: class names are stored "
                 "in the model file and metrics.json)",
                 where, b.data);
    buf_free(&b);
    return 0;
}

static void dataset_init(Dataset *d, const char *root) {
    memset(d, 0, sizeof *d);
    snprintf(d->root, sizeof d->root, "%s", root);
}

static void add_skip(Dataset *d, const char *path, const char *why) {
    fprintf(stderr, "skip %s: %s\n", path, why);
    size_t n = strlen(path) + strlen(why) + 3;
    char *line = rn_alloc(n);
    snprintf(line, n, "%s: %s", path, why);
    d->skip_reasons = rn_realloc(d->skip_reasons, (size_t)(d->n_skipped + 1) * sizeof(char *));
    d->skip_reasons[d->n_skipped++] = line;
}

/* Probe every file (in parallel: only the first 4 KB of each is read), report and drop
 * the bad ones. Takes ownership of paths. */
static void dataset_take_files(Dataset *d, char **paths, int *labels, int n) {
    char **why = rn_calloc((size_t)n + 1, sizeof *why);
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 32)
#endif
    for (int i = 0; i < n; i++) {
        char reason[256];
        int w, h;
        if (probe_file(paths[i], &w, &h, reason, sizeof reason) != 0) {
            why[i] = rn_strdup(reason);
        }
    }
    d->paths = rn_alloc(((size_t)n + 1) * sizeof *d->paths);
    d->labels = rn_alloc(((size_t)n + 1) * sizeof *d->labels);
    d->n = 0;
    for (int i = 0; i < n; i++) {
        if (why[i]) {
            add_skip(d, paths[i], why[i]);
            rn_free(why[i]);
            rn_free(paths[i]);
            continue;
        }
        d->paths[d->n] = paths[i];
        d->labels[d->n] = labels ? labels[i] : -1;
        d->n++;
    }
    rn_free(why);
}

/* The sorted sub-folder names of dir (hidden ones left out), "a, b, c" into out. */
static void subfolder_names(const char *dir, Buf *out) {
    StrList names = {0};
    DIR *dp = opendir(dir);
    if (dp) {
        struct dirent *e;
        while ((e = readdir(dp)) != NULL) {
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (e->d_name[0] != '.' && is_dir(p)) strlist_push(&names, rn_strdup(e->d_name));
        }
        closedir(dp);
    }
    if (names.n) qsort(names.s, (size_t)names.n, sizeof *names.s, cmp_str);
    for (int i = 0; i < names.n; i++) {
        buf_printf(out, "%s%s", i ? ", " : "", names.s[i]);
        rn_free(names.s[i]);
    }
    if (!names.n) buf_printf(out, "(none)");
    rn_free(names.s);
}

int dataset_split_folders(const char *dir, char *found, size_t found_len) {
    static const char *splits[] = {"train", "val", "valid", "validation", "test"};
    int n = 0;
    Buf b = {0};
    for (size_t i = 0; i < sizeof splits / sizeof *splits; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, splits[i]);
        if (!is_dir(p)) continue;
        buf_printf(&b, "%s%s", n ? ", " : "", splits[i]);
        n++;
    }
    snprintf(found, found_len, "%s", b.data ? b.data : "");
    buf_free(&b);
    return n;
}

static int folder_dataset(const char *dir, char **fixed, int n_fixed, Dataset *d) {
    dataset_init(d, dir);
    StrList classes = {0};
    if (fixed) {
        for (int c = 0; c < n_fixed; c++) strlist_push(&classes, rn_strdup(fixed[c]));
    } else {
        DIR *dp = opendir(dir);
        if (!dp) {
            rn_set_error("%s: cannot open directory: %s", dir, strerror(errno));
            return -1;
        }
        struct dirent *e;
        while ((e = readdir(dp)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            if (is_dir(p)) strlist_push(&classes, rn_strdup(e->d_name));
        }
        closedir(dp);
        if (classes.n == 0) {
            rn_set_error("%s: expected one sub-folder per class, found none", dir);
            rn_free(classes.s);
            return -1;
        }
        qsort(classes.s, (size_t)classes.n, sizeof *classes.s, cmp_str);
    }
    StrList files = {0};
    int *labels = NULL, n_labels = 0, rc = 0;
    /* the root and every class folder count as visited before any walk starts */
    Visited visited = {0};
    visit(&visited, dir);
    for (int c = 0; c < classes.n && !rc; c++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, classes.s[c]);
        if (!class_name_ok(dir, classes.s[c]))
            rc = -1;
        else if (is_dir(p))
            visit(&visited, p);
    }
    for (int c = 0; c < classes.n && !rc; c++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, classes.s[c]);
        int start = files.n;
        if (!is_dir(p)) {
            fprintf(stderr, "warning: %s: no folder for class '%s' (0 images)\n", dir,
                    classes.s[c]);
        } else if (list_images(p, 0, &visited, &files) != 0) {
            rc = -1;
            break;
        }
        if (files.n > start)
            qsort(files.s + start, (size_t)(files.n - start), sizeof *files.s, cmp_path);
        labels = rn_realloc(labels, ((size_t)files.n + 1) * sizeof *labels);
        for (; n_labels < files.n; n_labels++) labels[n_labels] = c;
    }
    visited_free(&visited);
    if (rc) {
        for (int i = 0; i < files.n; i++) rn_free(files.s[i]);
        for (int i = 0; i < classes.n; i++) rn_free(classes.s[i]);
        rn_free(files.s);
        rn_free(classes.s);
        rn_free(labels);
        return -1;
    }
    d->n_classes = classes.n;
    d->class_names = classes.s;
    dataset_take_files(d, files.s, labels, files.n);
    rn_free(files.s);
    rn_free(labels);
    int *count = rn_calloc((size_t)d->n_classes, sizeof *count);
    for (int i = 0; i < d->n; i++) count[d->labels[i]]++;
    for (int c = 0; c < d->n_classes; c++)
        if (count[c] == 0 && d->n > 0)
            fprintf(stderr, "warning: %s: class '%s' has no usable images\n", dir,
                    d->class_names[c]);
    rn_free(count);
    if (d->n == 0) {
        if (fixed) {
            /* the model's classes against what the folder holds */
            Buf want = {0}, found = {0};
            for (int c = 0; c < n_fixed; c++) buf_printf(&want, "%s%s", c ? ", " : "", fixed[c]);
            subfolder_names(dir, &found);
            rn_set_error("%s: no usable images in folders named as the %d expected classes "
                         "(%d skipped); expected sub-folders: %.300s; found: %.300s",
                         dir, n_fixed, d->n_skipped, want.data, found.data);
            buf_free(&want);
            buf_free(&found);
        } else {
            rn_set_error("%s: no usable images in %d class folders (%d skipped)", dir, d->n_classes,
                         d->n_skipped);
        }
        dataset_free(d);
        return -1;
    }
    return 0;
}

int dataset_from_folder(const char *dir, Dataset *d) { return folder_dataset(dir, NULL, 0, d); }

int dataset_from_folder_classes(const char *dir, char **class_names, int n_classes, Dataset *d) {
    return folder_dataset(dir, class_names, n_classes, d);
}

int dataset_from_unlabelled(const char *dir, Dataset *d) {
    dataset_init(d, dir);
    StrList files = {0};
    Visited visited = {0};
    visit(&visited, dir);
    int rc = list_images(dir, 0, &visited, &files);
    visited_free(&visited);
    if (rc != 0) {
        for (int i = 0; i < files.n; i++) rn_free(files.s[i]);
        rn_free(files.s);
        return -1;
    }
    if (files.n > 0) qsort(files.s, (size_t)files.n, sizeof *files.s, cmp_path);
    dataset_take_files(d, files.s, NULL, files.n);
    rn_free(files.s);
    if (d->n == 0) {
        rn_set_error("%s: no usable images (%d skipped)", dir, d->n_skipped);
        dataset_free(d);
        return -1;
    }
    return 0;
}

/* CIFAR-10: data_batch_1..5.bin / test_batch.bin, records [label][R 1024][G 1024][B 1024],
 * names in batches.meta.txt. CIFAR-100: train.bin / test.bin, records [coarse][fine][...],
 * fine labels, names in fine_label_names.txt. Also looks inside the archives' folders. */
static const char *cifar10_default[10] = {"airplane", "automobile", "bird",  "cat",  "deer",
                                          "dog",      "frog",       "horse", "ship", "truck"};

static int file_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int read_names(const char *path, int want, char **names) {
    size_t len;
    uint8_t *buf = read_file(path, &len);
    if (!buf) return -1;
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r((char *)buf, "\r\n", &save); line && n < want;
         line = strtok_r(NULL, "\r\n", &save)) {
        while (*line == ' ') line++;
        if (*line) names[n++] = rn_strdup(line);
    }
    rn_free(buf);
    if (n != want) {
        rn_set_error("%s: expected %d class names, found %d", path, want, n);
        for (int i = 0; i < n; i++) rn_free(names[i]);
        return -1;
    }
    return 0;
}

int dataset_from_cifar(const char *dir, int train, Dataset *d) {
    const char *subdirs[] = {"", "/cifar-10-batches-bin", "/cifar-100-binary"};
    char base[1024] = "", p[1100];
    int cifar100 = -1;
    for (int s = 0; s < 3 && cifar100 < 0; s++) {
        snprintf(base, sizeof base, "%s%s", dir, subdirs[s]);
        snprintf(p, sizeof p, "%s/%s", base, train ? "data_batch_1.bin" : "test_batch.bin");
        if (file_exists(p)) {
            cifar100 = 0;
            break;
        }
        snprintf(p, sizeof p, "%s/%s", base, train ? "train.bin" : "test.bin");
        if (file_exists(p)) cifar100 = 1;
    }
    if (cifar100 < 0) {
        rn_set_error("%s: expected CIFAR binaries (%s), found none", dir,
                     train ? "data_batch_1.bin or train.bin" : "test_batch.bin or test.bin");
        return -1;
    }
    dataset_init(d, base);
    int n_classes = cifar100 ? 100 : 10, label_bytes = cifar100 ? 2 : 1;
    size_t rec = (size_t)label_bytes + CIFAR_PIXELS;
    Buf all = {0};
    for (int b = 1; b <= (cifar100 || !train ? 1 : 5); b++) {
        if (cifar100)
            snprintf(p, sizeof p, "%s/%s", base, train ? "train.bin" : "test.bin");
        else if (train)
            snprintf(p, sizeof p, "%s/data_batch_%d.bin", base, b);
        else
            snprintf(p, sizeof p, "%s/test_batch.bin", base);
        if (b > 1 && !file_exists(p)) break; /* fewer than 5 training batches: use those */
        size_t len;
        uint8_t *buf = read_file(p, &len);
        if (!buf) {
            buf_free(&all);
            return -1;
        }
        if (len == 0 || len % rec != 0) {
            rn_set_error("%s: expected a multiple of %zu-byte records, found %zu bytes", p, rec,
                         len);
            rn_free(buf);
            buf_free(&all);
            return -1;
        }
        buf_put(&all, buf, len);
        rn_free(buf);
    }
    int n = (int)(all.len / rec);
    d->n = n;
    d->labels = rn_alloc((size_t)n * sizeof *d->labels);
    d->pixels = rn_alloc((size_t)n * CIFAR_PIXELS);
    d->pixel_w = d->pixel_h = CIFAR_SIDE;
    const uint8_t *r = (const uint8_t *)all.data;
    for (int i = 0; i < n; i++, r += rec) {
        int label = r[label_bytes - 1];
        if (label >= n_classes) {
            rn_set_error("%s: record %d: expected a label below %d, found %d", base, i, n_classes,
                         label);
            buf_free(&all);
            dataset_free(d);
            return -1;
        }
        d->labels[i] = label;
        const uint8_t *planes = r + label_bytes;
        uint8_t *o = d->pixels + (size_t)i * CIFAR_PIXELS;
        for (int k = 0; k < CIFAR_SIDE * CIFAR_SIDE; k++)
            for (int c = 0; c < 3; c++) o[k * 3 + c] = planes[c * CIFAR_SIDE * CIFAR_SIDE + k];
    }
    buf_free(&all);
    d->n_classes = n_classes;
    d->class_names = rn_calloc((size_t)n_classes, sizeof *d->class_names);
    snprintf(p, sizeof p, "%s/%s", base, cifar100 ? "fine_label_names.txt" : "batches.meta.txt");
    if (file_exists(p)) {
        if (read_names(p, n_classes, d->class_names) != 0) {
            dataset_free(d);
            return -1;
        }
    } else {
        for (int c = 0; c < n_classes; c++) {
            char name[16];
            snprintf(name, sizeof name, "%d", c);
            d->class_names[c] = rn_strdup(cifar100 ? name : cifar10_default[c]);
        }
    }
    return 0;
}

static int all_digits(const char *s) {
    if (!*s) return 0;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return 0;
    return 1;
}

static int cmp_label(const void *a, const void *b) {
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    if (all_digits(x) && all_digits(y)) {
        long u = atol(x), v = atol(y);
        if (u != v) return u < v ? -1 : 1;
    }
    return strcmp(x, y);
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r')) *--e = 0;
    if (e - s >= 2 && s[0] == '"' && e[-1] == '"') {
        e[-1] = 0;
        s++;
    }
    return s;
}

#define CSV_MAX_FIELDS 64

/* One CSV record at *p, split into fields in place (RFC 4180: comma-separated; a quoted
 * field may hold commas, newlines and doubled quotes ""; unquoted fields are trimmed of
 * blanks); *p moves past the record's line end and *line counts the newlines read.
 * Returns the field count (fields past CSV_MAX_FIELDS join the last one), or -1 for a
 * quote left open. */
static int csv_record(char **p, char **fields, int *line) {
    char *r = *p, *w = *p;
    int n = 0;
    for (;;) {
        char *start = w;
        int quoted = 0;
        while (*r == ' ' || *r == '\t') r++;
        if (*r == '"') {
            quoted = 1;
            r++;
            for (;;) {
                if (!*r) return -1;
                if (r[0] == '"' && r[1] == '"') {
                    *w++ = '"';
                    r += 2;
                } else if (r[0] == '"') {
                    r++;
                    break;
                } else {
                    *line += *r == '\n';
                    *w++ = *r++;
                }
            }
        }
        while (*r && *r != ',' && *r != '\n') *w++ = *r++;
        char c = *r;
        if (!quoted)
            while (w > start && (w[-1] == ' ' || w[-1] == '\t' || w[-1] == '\r')) w--;
        else
            while (w > start && w[-1] == '\r') w--;
        *w = 0;
        if (n < CSV_MAX_FIELDS)
            fields[n++] = start;
        else
            start[-1] = ','; /* joined to the last field */
        w++;
        if (c == ',') {
            r++;
            continue;
        }
        if (c == '\n') {
            (*line)++;
            r++;
        }
        *p = c ? r : NULL;
        return n;
    }
}

static int column_named(char **fields, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcasecmp(fields[i], name) == 0) return i;
    return -1;
}

/* "path,label" records (without a header, the label is the last field and the path the
 * ones before it), or a header naming the columns: "path" and "label" (or "class"), so
 * that infer --csv output (path,rank,class,index,prob) reads as its top-1 labels (rows of
 * rank 1). RFC 4180 quoting, as infer --csv writes it. Relative paths are relative to the
 * CSV's folder; classes are the sorted label names (numerically when all are integers). */
int dataset_from_csv(const char *csv_path, Dataset *d) {
    size_t len;
    uint8_t *buf = read_file(csv_path, &len);
    if (!buf) return -1;
    char folder[512] = ".";
    const char *slash = strrchr(csv_path, '/');
    if (slash) snprintf(folder, sizeof folder, "%.*s", (int)(slash - csv_path), csv_path);
    dataset_init(d, folder);
    StrList paths = {0}, names = {0};
    /* a NUL byte would end the text early and silently drop the lines after it */
    const uint8_t *nul = memchr(buf, 0, len);
    if (nul) {
        int at_line = 1;
        for (const uint8_t *c = buf; c < nul; c++) at_line += *c == '\n';
        rn_set_error("%s:%d: NUL byte at offset %zu (expected text lines 'path,label')", csv_path,
                     at_line, (size_t)(nul - buf));
        rn_free(buf);
        return -1;
    }
    char *text = (char *)buf;
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) text += 3; /* UTF-8 byte order mark */
    int line = 1, col_path = -1, col_label = -1, col_rank = -1, records = 0;
    for (char *at = text; at;) {
        int line_no = line;
        char *f[CSV_MAX_FIELDS];
        int n = csv_record(&at, f, &line);
        if (n < 0) {
            rn_set_error("%s:%d: a quoted field is not closed", csv_path, line_no);
            goto fail;
        }
        if (n == 1 && !f[0][0]) continue; /* blank line */
        if (records++ == 0 && column_named(f, n, "path") >= 0 &&
            (column_named(f, n, "label") >= 0 || column_named(f, n, "class") >= 0)) {
            col_path = column_named(f, n, "path");
            col_label = column_named(f, n, "label");
            if (col_label < 0) col_label = column_named(f, n, "class");
            col_rank = column_named(f, n, "rank");
            continue;
        }
        char *path, *label;
        if (col_path >= 0) {
            if (n <= col_path || n <= col_label || (col_rank >= 0 && n <= col_rank)) {
                rn_set_error("%s:%d: expected the header's columns, found %d field%s", csv_path,
                             line_no, n, n == 1 ? "" : "s");
                goto fail;
            }
            if (col_rank >= 0 && strcmp(f[col_rank], "1") != 0) continue;
            path = f[col_path];
            label = f[col_label];
        } else {
            if (n < 2) {
                rn_set_error("%s:%d: expected 'path,label', found '%.80s'", csv_path, line_no,
                             f[0]);
                goto fail;
            }
            for (int i = 1; i < n - 1; i++) f[i][-1] = ','; /* an unquoted path with commas */
            path = f[0];
            label = f[n - 1];
        }
        if (!*path || !*label) {
            rn_set_error("%s:%d: expected 'path,label' with both fields, found an empty one",
                         csv_path, line_no);
            goto fail;
        }
        char where[600];
        snprintf(where, sizeof where, "%s:%d", csv_path, line_no);
        if (!class_name_ok(where, label)) goto fail;
        size_t size = strlen(folder) + strlen(path) + 2;
        char *full = rn_alloc(size);
        if (path[0] == '/')
            snprintf(full, size, "%s", path);
        else
            snprintf(full, size, "%s/%s", folder, path);
        strlist_push(&paths, full);
        strlist_push(&names, rn_strdup(label));
    }
    if (paths.n == 0) {
        rn_set_error("%s: expected 'path,label' lines, found none", csv_path);
        goto fail;
    }
    char **sorted = rn_alloc((size_t)names.n * sizeof *sorted);
    memcpy(sorted, names.s, (size_t)names.n * sizeof *sorted);
    qsort(sorted, (size_t)names.n, sizeof *sorted, cmp_label);
    StrList classes = {0};
    for (int i = 0; i < names.n; i++)
        if (i == 0 || strcmp(sorted[i], sorted[i - 1]) != 0)
            strlist_push(&classes, rn_strdup(sorted[i]));
    rn_free(sorted);
    int *labels = rn_alloc((size_t)names.n * sizeof *labels);
    for (int i = 0; i < names.n; i++) {
        char **hit =
            bsearch(&names.s[i], classes.s, (size_t)classes.n, sizeof *classes.s, cmp_label);
        labels[i] = (int)(hit - classes.s);
        rn_free(names.s[i]);
    }
    rn_free(names.s);
    d->n_classes = classes.n;
    d->class_names = classes.s;
    dataset_take_files(d, paths.s, labels, paths.n);
    rn_free(paths.s);
    rn_free(labels);
    rn_free(buf);
    if (d->n == 0) {
        rn_set_error("%s: no usable images (%d skipped)", csv_path, d->n_skipped);
        dataset_free(d);
        return -1;
    }
    return 0;
fail:
    for (int i = 0; i < paths.n; i++) rn_free(paths.s[i]);
    for (int i = 0; i < names.n; i++) rn_free(names.s[i]);
    rn_free(paths.s);
    rn_free(names.s);
    rn_free(buf);
    return -1;
}

void dataset_free(Dataset *d) {
    if (d->paths)
        for (int i = 0; i < d->n; i++) rn_free(d->paths[i]);
    for (int c = 0; c < d->n_classes && d->class_names; c++) rn_free(d->class_names[c]);
    for (int i = 0; i < d->n_skipped && d->skip_reasons; i++) rn_free(d->skip_reasons[i]);
    rn_free(d->paths);
    rn_free(d->labels);
    rn_free(d->pixels);
    rn_free(d->class_names);
    rn_free(d->skip_reasons);
    memset(d, 0, sizeof *d);
}

void dataset_summary(const Dataset *d, const char *title, FILE *out) {
    fprintf(out, "%s: %d images, %d classes (%s)\n", title ? title : "dataset", d->n, d->n_classes,
            d->root);
    int *count = rn_calloc((size_t)d->n_classes + 1, sizeof *count);
    int unlabelled = 0;
    for (int i = 0; i < d->n; i++) {
        if (d->labels[i] >= 0 && d->labels[i] < d->n_classes)
            count[d->labels[i]]++;
        else
            unlabelled++;
    }
    int shown = d->n_classes <= 20 ? d->n_classes : 20;
    for (int c = 0; c < shown; c++) fprintf(out, "  %-24s %6d\n", d->class_names[c], count[c]);
    if (shown < d->n_classes) fprintf(out, "  ... %d more classes\n", d->n_classes - shown);
    if (unlabelled) fprintf(out, "  %-24s %6d\n", "(unlabelled)", unlabelled);
    if (d->n_skipped) {
        fprintf(out, "  skipped %d file%s:\n", d->n_skipped, d->n_skipped == 1 ? "" : "s");
        int lines = d->skip_reasons ? (d->n_skipped < 10 ? d->n_skipped : 10) : 0;
        for (int i = 0; i < lines; i++) fprintf(out, "    %s\n", d->skip_reasons[i]);
        if (lines < d->n_skipped) fprintf(out, "    ... and %d more\n", d->n_skipped - lines);
    }
    rn_free(count);
}

void dataset_subset(const Dataset *d, const int *idx, int n, Dataset *out) {
    dataset_init(out, d->root);
    out->n = n;
    out->labels = rn_alloc(((size_t)n + 1) * sizeof *out->labels);
    if (d->paths) { out->paths = rn_calloc((size_t)n + 1, sizeof *out->paths); }
    if (d->pixels) {
        out->pixels = rn_alloc((size_t)n * d->pixel_w * d->pixel_h * 3 + 1);
        out->pixel_w = d->pixel_w;
        out->pixel_h = d->pixel_h;
    }
    size_t rec = (size_t)d->pixel_w * d->pixel_h * 3;
    for (int i = 0; i < n; i++) {
        int j = idx[i];
        out->labels[i] = d->labels[j];
        if (d->paths && d->paths[j]) out->paths[i] = rn_strdup(d->paths[j]);
        if (d->pixels) memcpy(out->pixels + i * rec, d->pixels + (size_t)j * rec, rec);
    }
    out->n_classes = d->n_classes;
    out->class_names = rn_calloc((size_t)d->n_classes + 1, sizeof *out->class_names);
    for (int c = 0; c < d->n_classes; c++) out->class_names[c] = rn_strdup(d->class_names[c]);
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Per class (unlabelled items form one more group): shuffle its items with one Rng seeded
 * by seed, take round(n_c * train_frac) for train, round(n_c * val_frac) for val, the rest
 * for test. Each split keeps dataset order. */
int dataset_split(const Dataset *d, float train_frac, float val_frac, uint64_t seed, Dataset *train,
                  Dataset *val, Dataset *test) {
    if (!(train_frac >= 0 && val_frac >= 0 && train_frac + val_frac <= 1.0f + 1e-6f)) {
        rn_set_error("split: expected fractions >= 0 with train + val <= 1, found %g + %g",
                     train_frac, val_frac);
        return -1;
    }
    int k = d->n_classes + 1;
    int *order = rn_alloc(((size_t)d->n + 1) * sizeof *order);
    int *split[3];
    int counts[3] = {0, 0, 0};
    for (int s = 0; s < 3; s++) split[s] = rn_alloc(((size_t)d->n + 1) * sizeof(int));
    Rng rng;
    rng_seed(&rng, seed);
    for (int c = 0; c < k; c++) {
        int group = c < d->n_classes ? c : -1, m = 0;
        for (int i = 0; i < d->n; i++) {
            int l = d->labels[i] >= 0 && d->labels[i] < d->n_classes ? d->labels[i] : -1;
            if (l == group) order[m++] = i;
        }
        rng_shuffle(&rng, order, m);
        int n_train = (int)floor(m * (double)train_frac + 0.5);
        int n_val = (int)floor(m * (double)val_frac + 0.5);
        if (n_train > m) n_train = m;
        if (n_val > m - n_train) n_val = m - n_train;
        for (int i = 0; i < m; i++) {
            int s = i < n_train ? 0 : i < n_train + n_val ? 1 : 2;
            split[s][counts[s]++] = order[i];
        }
    }
    Dataset *outs[3] = {train, val, test};
    for (int s = 0; s < 3; s++) {
        qsort(split[s], (size_t)counts[s], sizeof(int), cmp_int);
        if (outs[s]) dataset_subset(d, split[s], counts[s], outs[s]);
        rn_free(split[s]);
    }
    rn_free(order);
    return 0;
}

void class_weights_balanced(const Dataset *d, float *w) {
    int *count = rn_calloc((size_t)d->n_classes + 1, sizeof *count);
    int n = 0;
    for (int i = 0; i < d->n; i++)
        if (d->labels[i] >= 0 && d->labels[i] < d->n_classes) {
            count[d->labels[i]]++;
            n++;
        }
    for (int c = 0; c < d->n_classes; c++)
        w[c] = count[c] ? (float)((double)n / ((double)d->n_classes * count[c])) : 0.0f;
    rn_free(count);
}

static int load_item(const Dataset *d, int i, Image *img, char *why, size_t why_len) {
    if (d->pixels && (!d->paths || !d->paths[i])) {
        size_t rec = (size_t)d->pixel_w * d->pixel_h * 3;
        img->w = d->pixel_w;
        img->h = d->pixel_h;
        img->rgb = rn_alloc(rec);
        memcpy(img->rgb, d->pixels + (size_t)i * rec, rec);
        return 0;
    }
    if (!d->paths || !d->paths[i]) {
        img->w = img->h = 0;
        img->rgb = NULL;
        snprintf(why, why_len, "item %d has neither a path nor pixels", i);
        return -1;
    }
    return decode_file(d->paths[i], img, why, why_len);
}

int dataset_load_image(const Dataset *d, int i, Image *img, char *why, size_t why_len) {
    if (i < 0 || i >= d->n) {
        snprintf(why, why_len, "item %d out of range [0, %d)", i, d->n);
        rn_set_error("dataset: %s", why);
        return -1;
    }
    if (load_item(d, i, img, why, why_len) != 0) {
        rn_set_error("%s: %s", d->paths && d->paths[i] ? d->paths[i] : "dataset", why);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Loader                                                                                */
/* ------------------------------------------------------------------------------------ */

/* Worker threads claim items one at a time in epoch order and write them into a ring of
 * LOADER_DEPTH batch slots; they never run more than LOADER_DEPTH batches ahead of the
 * consumer. Each item's augmentation Rng is seeded from (seed, epoch, dataset index), so
 * the pixels never depend on which thread did the work or when. */
#define LOADER_DEPTH 3

typedef struct {
    float *x;
    int *labels, *idx;
    uint8_t *ok;
    int done; /* items finished */
} Slot;

struct Loader {
    const Dataset *d;
    Preprocess prep;
    Augment aug;
    int batch, shuffle, n_threads;
    uint64_t seed;
    size_t sample_floats;
    int *order;
    uint8_t *failed; /* item failed before: reported once, never retried */
    int n_failures;
    Slot slots[LOADER_DEPTH];
    int epoch, started;
    /* loader_shard (shard_ranks 1: everything) */
    int shard_rank, shard_ranks, shard_whole;
    int next_pos;       /* next epoch position to claim */
    int consumer_batch; /* next batch loader_next hands out */
    int in_flight, quit;
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    pthread_t *threads;
};

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int batch_count(const Loader *l, int b) {
    int rest = l->d->n - b * l->batch;
    return rest < l->batch ? rest : l->batch;
}

/* Does epoch position pos belong to this rank's shard (loader_shard)? */
static int in_shard(const Loader *l, int pos) {
    int lo, hi;
    if (l->shard_ranks <= 1) return 1;
    if (l->shard_whole) {
        dist_batch_range(l->d->n, l->batch, l->shard_rank, l->shard_ranks, &lo, &hi);
        return pos >= lo && pos < hi;
    }
    int b = pos / l->batch;
    dist_slice(batch_count(l, b), l->shard_rank, l->shard_ranks, &lo, &hi);
    return pos % l->batch >= lo && pos % l->batch < hi;
}

static void *loader_worker(void *arg) {
    Loader *l = arg;
    Image img;
    char why[256];
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->quit && !(l->started && l->next_pos < l->d->n &&
                             l->next_pos / l->batch < l->consumer_batch + LOADER_DEPTH))
            pthread_cond_wait(&l->work_cv, &l->mu);
        if (l->quit) break;
        int pos = l->next_pos++, epoch = l->epoch;
        int item = l->order[pos], known_bad = l->failed[item], mine = in_shard(l, pos);
        l->in_flight++;
        pthread_mutex_unlock(&l->mu);

        Slot *s = &l->slots[(pos / l->batch) % LOADER_DEPTH];
        int k = pos % l->batch, ok = 0;
        if (!mine) {
            known_bad = 1; /* another rank's: left out, not a failure */
        } else if (!known_bad && load_item(l->d, item, &img, why, sizeof why) == 0) {
            Rng rng;
            rng_seed(&rng, mix64(l->seed ^ mix64((uint64_t)epoch + 0x632be59bd9b4e019ULL) ^
                                 mix64((uint64_t)item * 0x9e3779b97f4a7c15ULL + 1)));
            preprocess_image(&img, &l->prep, &l->aug, &rng, s->x + k * l->sample_floats);
            image_free(&img);
            ok = 1;
        }
        s->labels[k] = l->d->labels[item];
        s->idx[k] = item;
        s->ok[k] = (uint8_t)ok;

        pthread_mutex_lock(&l->mu);
        if (!ok && !known_bad) {
            l->failed[item] = 1;
            l->n_failures++;
            const char *path = l->d->paths && l->d->paths[item] ? l->d->paths[item] : "item";
            fprintf(stderr, "skip %s: %s\n", path, why);
        }
        s->done++;
        l->in_flight--;
        pthread_cond_broadcast(&l->done_cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

Loader *loader_create(const Dataset *d, const Preprocess *p, const Augment *aug, int batch,
                      int shuffle, uint64_t seed, int n_threads) {
    if (batch <= 0 || d->n <= 0 || p->size <= 0) {
        rn_set_error("loader: expected batch > 0, a non-empty dataset and size > 0, found "
                     "batch %d, %d items, size %d",
                     batch, d->n, p->size);
        return NULL;
    }
    Loader *l = rn_calloc(1, sizeof *l);
    l->d = d;
    l->prep = *p;
    if (aug) l->aug = *aug;
    l->batch = batch;
    l->shuffle = shuffle;
    l->seed = seed;
    l->n_threads = n_threads > 0 ? n_threads : rn_threads();
    if (l->n_threads < 1) l->n_threads = 1;
    if (l->n_threads > 64) l->n_threads = 64;
    l->sample_floats = (size_t)3 * p->size * p->size;
    l->order = rn_alloc((size_t)d->n * sizeof *l->order);
    l->failed = rn_calloc((size_t)d->n, 1);
    for (int s = 0; s < LOADER_DEPTH; s++) {
        l->slots[s].x = rn_alloc((size_t)batch * l->sample_floats * sizeof(float));
        l->slots[s].labels = rn_alloc((size_t)batch * sizeof(int));
        l->slots[s].idx = rn_alloc((size_t)batch * sizeof(int));
        l->slots[s].ok = rn_alloc((size_t)batch);
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work_cv, NULL);
    pthread_cond_init(&l->done_cv, NULL);
    l->threads = rn_alloc((size_t)l->n_threads * sizeof *l->threads);
    for (int t = 0; t < l->n_threads; t++) {
        if (pthread_create(&l->threads[t], NULL, loader_worker, l) != 0) {
            fprintf(stderr, "fatal: cannot start loader thread\n");
            exit(2);
        }
    }
    return l;
}

void loader_shard(Loader *l, int rank, int ranks, int whole_batches) {
    pthread_mutex_lock(&l->mu);
    l->shard_rank = rank;
    l->shard_ranks = ranks;
    l->shard_whole = whole_batches;
    pthread_mutex_unlock(&l->mu);
}

void loader_start_epoch(Loader *l, int epoch) {
    pthread_mutex_lock(&l->mu);
    l->next_pos = l->d->n; /* stop claims, then wait for the items being worked on */
    while (l->in_flight > 0) pthread_cond_wait(&l->done_cv, &l->mu);
    for (int i = 0; i < l->d->n; i++) l->order[i] = i;
    if (l->shuffle) {
        Rng rng;
        rng_seed(&rng, mix64(l->seed ^ mix64((uint64_t)epoch + 0x632be59bd9b4e019ULL)));
        rng_shuffle(&rng, l->order, l->d->n);
    }
    for (int s = 0; s < LOADER_DEPTH; s++) l->slots[s].done = 0;
    l->epoch = epoch;
    l->started = 1;
    l->next_pos = 0;
    l->consumer_batch = 0;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
}

int loader_next(Loader *l, float *x, int *labels, int *idx) {
    int n;
    while (loader_next_batch(l, x, labels, idx, &n))
        if (n > 0) return n; /* a batch whose every item failed is passed over */
    return 0;
}

int loader_next_batch(Loader *l, float *x, int *labels, int *idx, int *n_out) {
    if (!l->started) loader_start_epoch(l, 0);
    int n_batches = (l->d->n + l->batch - 1) / l->batch;
    *n_out = 0;
    pthread_mutex_lock(&l->mu);
    int b = l->consumer_batch;
    if (b >= n_batches) {
        pthread_mutex_unlock(&l->mu);
        return 0;
    }
    Slot *s = &l->slots[b % LOADER_DEPTH];
    int want = batch_count(l, b);
    while (s->done < want) pthread_cond_wait(&l->done_cv, &l->mu);
    pthread_mutex_unlock(&l->mu);

    int n = 0;
    for (int k = 0; k < want; k++) {
        if (!s->ok[k]) continue;
        if (x)
            memcpy(x + n * l->sample_floats, s->x + k * l->sample_floats,
                   l->sample_floats * sizeof(float));
        if (labels) labels[n] = s->labels[k];
        if (idx) idx[n] = s->idx[k];
        n++;
    }
    pthread_mutex_lock(&l->mu);
    s->done = 0;
    l->consumer_batch = b + 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    *n_out = n;
    return 1;
}

int loader_failures(const Loader *l) {
    pthread_mutex_lock((pthread_mutex_t *)&l->mu);
    int n = l->n_failures;
    pthread_mutex_unlock((pthread_mutex_t *)&l->mu);
    return n;
}

void loader_free(Loader *l) {
    if (!l) return;
    pthread_mutex_lock(&l->mu);
    l->quit = 1;
    pthread_cond_broadcast(&l->work_cv);
    pthread_mutex_unlock(&l->mu);
    for (int t = 0; t < l->n_threads; t++) pthread_join(l->threads[t], NULL);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->work_cv);
    pthread_cond_destroy(&l->done_cv);
    for (int s = 0; s < LOADER_DEPTH; s++) {
        rn_free(l->slots[s].x);
        rn_free(l->slots[s].labels);
        rn_free(l->slots[s].idx);
        rn_free(l->slots[s].ok);
    }
    rn_free(l->threads);
    rn_free(l->order);
    rn_free(l->failed);
    rn_free(l);
}
