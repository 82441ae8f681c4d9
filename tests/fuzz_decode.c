/* tests/fuzz_decode.c - libFuzzer target for image decoding and preprocessing.
 *
 * Feeds arbitrary bytes to image_decode_memory (header checks, then stb_image) and runs
 * every decoded image through the eval and augmented preprocessing at a small size.
 * Decoding must never crash, leak or allocate beyond the size caps; a failure must come
 * with a reason.
 *
 * Not part of `make test` (it needs clang's libFuzzer): `make fuzz` builds it, seeds it
 * with small valid files of every format (tests/fuzz_seeds.c, written at build time) and
 * runs it for FUZZ_SECONDS; `make fuzz-long` runs it for an hour. */
#include "resnet.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    Image img;
    char why[256];
    why[0] = 0;
    if (image_decode_memory(data, size, &img, why, sizeof why) != 0) {
        if (!why[0]) abort(); /* every failure says why */
        return 0;
    }
    if (img.w <= 0 || img.h <= 0 || img.w > RN_MAX_IMAGE_SIDE || img.h > RN_MAX_IMAGE_SIDE) abort();
    if ((int64_t)img.w * img.h > RN_MAX_IMAGE_PIXELS) abort();
    float out[3 * 8 * 8];
    Preprocess p = {PREP_TORCHVISION, 8, 0.875f};
    preprocess_image(&img, &p, NULL, NULL, out);
    Augment a = augment_default();
    a.rotate_deg = 30;
    a.brightness = a.contrast = 0.3f;
    Rng rng;
    rng_seed(&rng, size);
    preprocess_image(&img, &p, &a, &rng, out);
    image_free(&img);
    return 0;
}
