/* examples/train_min.c - the textbook transfer-learning loop on resnet-c's public API:
 * load weights, freeze the early layers, then forward, loss, backward, optimizer step,
 * and evaluate. `make test` builds and runs it.
 *
 *   build/examples/train_min [WEIGHTS.safetensors]
 *
 * WEIGHTS: a cifar_resnet20 (e.g. akamaster's, converted by tools/torch2safetensors.py);
 * without it the backbone starts from random weights. The task is generated: 32x32
 * pictures of horizontal (class 0) or vertical (class 1) stripes in noise. */
#include <stdio.h>
#include <stdlib.h>

#include "resnet.h"

enum { BATCH = 16, SIZE = 32, STEPS = 30, CLASSES = 2 };

/* A batch of the task: stripes of a random period and phase, plus noise. */
static void make_batch(Rng *rng, float *x, int *labels) {
    for (int b = 0; b < BATCH; b++) {
        int vertical = (int)rng_below(rng, 2), period = 4 + (int)rng_below(rng, 5);
        int phase = (int)rng_below(rng, (uint32_t)period);
        labels[b] = vertical;
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < SIZE; i++)
                for (int j = 0; j < SIZE; j++) {
                    int t = (vertical ? j : i) + phase;
                    float v = (t % period) < period / 2 ? 1.0f : -1.0f;
                    x[((b * 3 + c) * SIZE + i) * SIZE + j] = v + 0.5f * rng_normal(rng);
                }
    }
}

int main(int argc, char **argv) {
    Net *net = resnet_create("cifar_resnet20", CLASSES, NULL, 1);
    /* 1. pretrained weights; a stock 10-class head is replaced by a fresh 2-class one */
    if (argc > 1 && net_load_weights(net, argv[1], 1) != 0) {
        fprintf(stderr, "train_min: %s\n", rn_error());
        return 1;
    }
    /* 2. freeze the stem, layer1 and layer2: only layer3 and the head train */
    net_set_first_trainable(net, net_find_group(net, "layer3"));
    OptConfig cfg = opt_default(OPT_ADAM, 1e-3f);
    Optimizer *opt = optimizer_create(net, &cfg);
    float *x = malloc(sizeof(float) * BATCH * 3 * SIZE * SIZE);
    float probs[BATCH * CLASSES], dlogits[BATCH * CLASSES];
    int labels[BATCH];
    Rng rng;
    rng_seed(&rng, 42);
    /* 3. train: one plan for the batch, then the loop */
    if (net_plan(net, BATCH, SIZE, SIZE, 1) != 0) {
        fprintf(stderr, "train_min: %s\n", rn_error());
        return 1;
    }
    for (int step = 1; step <= STEPS; step++) {
        make_batch(&rng, x, labels);
        const float *logits = net_forward(net, x, BATCH, 1);
        float loss =
            softmax_cross_entropy_forward(BATCH, CLASSES, logits, labels, NULL, 0.0f, probs);
        softmax_cross_entropy_backward(BATCH, CLASSES, probs, labels, NULL, 0.0f, dlogits);
        net_zero_grad(net);
        net_backward(net, dlogits, BATCH, NULL); /* gradients of layer3 and the head */
        optimizer_step(opt, net);
        if (step % 10 == 0) printf("step %2d  loss %.4f\n", step, loss);
    }
    /* 4. evaluate on fresh batches, batch norm in eval mode */
    net_plan(net, BATCH, SIZE, SIZE, 0);
    int correct = 0, total = 0;
    for (int b = 0; b < 8; b++) {
        make_batch(&rng, x, labels);
        const float *logits = net_forward(net, x, BATCH, 0);
        for (int i = 0; i < BATCH; i++, total++)
            correct += (logits[i * CLASSES + 1] > logits[i * CLASSES]) == labels[i];
    }
    printf("eval accuracy %.3f on %d images (%lld of %lld parameters trained)\n",
           (double)correct / total, total, (long long)net_count_params(net, 1),
           (long long)net_count_params(net, 0));
    free(x);
    optimizer_free(opt);
    net_free(net);
    return correct > 0.9 * total ? 0 : 1;
}
