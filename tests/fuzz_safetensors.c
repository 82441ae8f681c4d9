/* tests/fuzz_safetensors.c - libFuzzer target for everything that reads safetensors files.
 *
 * Feeds arbitrary bytes to st_parse (header JSON, dtypes, shapes, offsets), reads every
 * float tensor, loads the file as a model (model_load_st: metadata, the network it
 * describes, weights) and as a checkpoint of a small fixed network with an Adam state
 * (checkpoint_load_st: weights, optimizer moments and hyper-parameters, RNG states).
 * Nothing may crash, leak or allocate out of proportion to the input; every failure must
 * come with a reason.
 *
 * Not part of `make test` (it needs clang's libFuzzer): `make fuzz` builds it, writes its
 * seeds (tests/fuzz_seeds.c: a checkpoint, weights, a model header, F16/BF16/F64/I64
 * tensors) and runs it for FUZZ_SECONDS; `make fuzz-long` runs it for much longer. */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void need_reason(void) {
    if (!rn_error()[0]) abort(); /* every failure says why */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    StFile f;
    rn_set_error("%s", "");
    if (st_parse(data, size, "<fuzz>", &f) != 0) {
        need_reason();
        return 0;
    }
    for (int i = 0; i < f.n_tensors; i++) {
        const StTensor *t = &f.tensors[i];
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
        if (n > (1 << 20)) continue;
        float *out = malloc(sizeof(float) * (size_t)(n + 1));
        rn_set_error("%s", "");
        if (st_read_f32(&f, t, out) != 0) need_reason();
        free(out);
    }

    ModelInfo info;
    rn_set_error("%s", "");
    Net *model = model_load_st(&f, &info);
    if (model) {
        if (info.num_classes != model->num_classes || !info.class_names) abort();
        net_free(model);
        model_info_free(&info);
    } else {
        need_reason();
    }

    Net *net = fuzz_net();
    OptConfig oc = opt_default(OPT_ADAM, 0.01f);
    Optimizer *opt = optimizer_create(net, &oc);
    Rng rng;
    rng_seed(&rng, 1);
    rn_set_error("%s", "");
    if (checkpoint_load_st(&f, net, opt, &rng) != 0) need_reason();
    optimizer_free(opt);
    net_free(net);
    st_close(&f);
    return 0;
}
