/* tests/fuzz.h - what the fuzz targets and their seed generator (tests/fuzz_seeds.c) share:
 * the small network whose checkpoints tests/fuzz_safetensors.c loads. */
#ifndef RN_FUZZ_H
#define RN_FUZZ_H
#include "resnet.h"

/* features [4, 1, 1] -> BatchNorm1d, Linear(4, 5), ReLU, BatchNorm1d, Linear(5, 3) */
static inline Net *fuzz_net(void) {
    HeadSpec hs;
    if (head_parse("mlp:5:bn", &hs) != 0) return NULL;
    return head_create(4, 1, 1, 3, &hs, 1);
}
#endif
