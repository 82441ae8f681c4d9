/* conv_epilogue.h - a convolution's epilogue (ConvEpilogue, resnet.h) on one vector of
 * outputs, for the kernels that apply it to vectors: the depthwise kernel and 1x1 maps
 * (layers.c) and Winograd's output transform (winograd.c). Each applies epilogue_row's
 * operations in its order, so a fused output has the layer-by-layer bits. Internal to the
 * library. */
#ifndef RN_CONV_EPILOGUE_H
#define RN_CONV_EPILOGUE_H

#include "resnet.h"
#include "simd.h"

/* act(o * sc + sh + res): lanes along a row (sc and sh the row's scale and shift in every
 * lane) or across channels (a vector of each); res NULL: no residual. */
static inline VF epilogue_vector(const ConvEpilogue *e, VF o, VF sc, VF sh, const VF *res) {
    if (e->scale)
        o = vadd(vmul(o, sc), sh);
    else if (e->shift)
        o = vadd(o, sh);
    if (res) o = vadd(o, *res);
    if (e->act == CONV_ACT_RELU)
        o = vmax(o, vzero());
    else if (e->act == CONV_ACT_SILU)
        o = vsilu(o);
    return o;
}

#endif /* RN_CONV_EPILOGUE_H */
