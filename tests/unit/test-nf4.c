/*
 * test-nf4.c: NF4, QLoRA's double-quantised 4-bit NormalFloat.
 *
 * The 16 values are bitsandbytes' table and the 256 of the dynamic map are sorted, signed,
 * with 0 and 1; every dequantised value is a table value times its block's scale; the
 * round-trip error stays within the bound the table's spacing gives; a matrix product with
 * an NF4 weight equals the same product with the dequantised weight (forward and the input
 * gradient); and the reference LM quantised by lavinia holds the weights and gives the logits
 * of tests/reference/nf4.bin (gen_nf4.py: the same quantisation in float64, the model in
 * float64 with the dequantised weights), the weights bit for bit, the logits within 1e-5.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "lavinia/error.h"
#include "lavinia/ops.h"
#include "model/llama.h"
#include "refdata.h"
#include "testutil.h"

static const float nf4_table[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

static void tables(void)
{
    bool same = true;
    for (int i = 0; i < 16; i++)
        same &= lv_nf4_value(i) == nf4_table[i];
    tu_assert(same, "the 16 NF4 values are bitsandbytes' table");
    bool sorted = true, zero = false, one = false;
    int neg = 0, pos = 0;
    for (int i = 0; i < 256; i++) {
        float v = lv_dynamic_map_value(i);
        sorted &= i == 0 || v >= lv_dynamic_map_value(i - 1);
        zero |= v == 0.0f;
        one |= v == 1.0f;
        neg += v < 0;
        pos += v > 0;
    }
    tu_assert(sorted && zero && one && neg == 127 && pos == 128 &&
                  lv_dynamic_map_value(0) == -0.99296875f &&
                  fabsf(lv_dynamic_map_value(128) - 5.5e-7f) < 1e-9f,
              "the dynamic map: 256 sorted values, 127 negative, 0, 128 positive with 1 "
              "(smallest %.3g, first positive %.3g)", (double)lv_dynamic_map_value(0),
              (double)lv_dynamic_map_value(128));
}

/* n values of several blocks and groups: every value a table entry times its block scale */
static void round_trip(void)
{
    enum { NB = 300, N = NB * 64 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    void *q = malloc(lv_dtype_bytes(LV_NF4, N));
    for (int b = 0; b < NB; b++)
        for (int j = 0; j < 64; j++)
            x[b * 64 + j] = (float)(tu_randn() * (0.01 + 0.02 * (b % 7)));
    memset(&x[5 * 64], 0, 64 * sizeof *x);                /* a block of zeros */
    lv_nf4_quantize(q, x, N);
    lv_nf4_dequantize(y, q, N);
    bool codebook = true;
    double worst = 0, worst_bound = 0, sum = 0, norm = 0, half_gap = 0;
    for (int c = 0; c + 1 < 16; c++)
        half_gap = fmax(half_gap, ((double)nf4_table[c + 1] - nf4_table[c]) / 2);
    for (int b = 0; b < NB; b++) {
        float amax = 0, scale = 0;
        for (int j = 0; j < 64; j++)
            amax = fmaxf(amax, fabsf(x[b * 64 + j]));
        for (int j = 0; j < 64; j++)   /* the largest value is coded +-1: its scale */
            scale = fmaxf(scale, fabsf(y[b * 64 + j]));
        for (int j = 0; j < 64; j++) {
            float v = y[b * 64 + j];
            bool in = false;
            for (int c = 0; c < 16 && !in; c++)
                in = v == nf4_table[c] * scale;
            codebook &= in || amax == 0;
            double e = fabs((double)v - x[b * 64 + j]);
            /* half the widest gap of the table (-1 to -0.696: 0.152) of the true absmax, plus
             * the scale's own error */
            double bound = half_gap * amax + fabs((double)scale - amax) + 1e-12;
            worst = fmax(worst, e);
            worst_bound = fmax(worst_bound, e / bound);
            sum += e * e;
            norm += (double)x[b * 64 + j] * x[b * 64 + j];
        }
    }
    tu_assert(codebook, "every dequantised value is one of the 16 values times its block's "
              "scale (%d blocks, 2 groups of scales, one block of zeros)", NB);
    tu_assert(worst_bound <= 1.0, "round trip within half the widest gap of the table plus "
              "the scale's error: worst %.3g of the bound, largest error %.3g, relative RMS "
              "error %.3f", worst_bound, worst, sqrt(sum / norm));
    tu_assert(y[5 * 64] == 0.0f && y[5 * 64 + 63] == 0.0f, "a block of zeros stays zero");
    int64_t shape[2] = { 150, 128 };
    lv_tensor *t = lv_tensor_new(LV_NF4, 2, shape);
    bool get = t != NULL;
    if (t) {
        memcpy(t->data, q, lv_dtype_bytes(LV_NF4, N));
        for (int i = 0; i < N; i += 37)
            get &= lv_tensor_get(t, i) == y[i];
    }
    tu_assert(get, "lv_tensor_get reads the dequantised values");
    lv_tensor_free(t);
    int64_t odd[2] = { 3, 20 };
    tu_assert(lv_tensor_new(LV_NF4, 2, odd) == NULL && strstr(lv_errmsg(), "multiple of 64"),
              "60 values are not whole NF4 blocks: %s", lv_errmsg());
    free(x);
    free(y);
    free(q);
}

/* x W^T with W in NF4 = with W dequantised, and the gradient reaching x */
static void product(void)
{
    int64_t ws[2] = { 64, 128 }, xs[2] = { 3, 128 };
    lv_tensor *w32 = tu_rand_tensor(LV_F32, 2, ws, 0.1);
    lv_tensor *wq = lv_tensor_new(LV_NF4, 2, ws), *wd = lv_tensor_new(LV_F32, 2, ws);
    lv_tensor *x = tu_rand_tensor(LV_F32, 2, xs, 1.0);
    lv_convert_row(wq->data, LV_NF4, w32->data, LV_F32, 64 * 128);
    lv_convert_row(wd->data, LV_F32, wq->data, LV_NF4, 64 * 128);
    lv_tensor_set_frozen(wq);
    lv_tensor_set_frozen(wd);
    lv_tensor_set_param(x);
    float yq[3 * 64], yd[3 * 64], gq[3 * 128], gd[3 * 128];
    int rc = LV_OK;
    for (int k = 0; k < 2 && rc == LV_OK; k++) {
        lv_graph *g = lv_graph_new(NULL);
        lv_graph_set_recording(g, true);
        lv_tensor_zero_grad(x);
        lv_tensor *y = lv_linear(g, x, k ? wd : wq, NULL);
        rc = y ? lv_backward(g, lv_sum_all(g, lv_mul(g, y, y))) : LV_ERR;
        if (rc == LV_OK) {
            lv_tensor_to_f32(k ? yd : yq, y);
            memcpy(k ? gd : gq, x->grad->data, sizeof gq);
        }
        lv_graph_free(g);
    }
    tu_assert(rc == LV_OK && memcmp(yq, yd, sizeof yq) == 0 && memcmp(gq, gd, sizeof gq) == 0,
              "x W^T with an NF4 W: the output and x's gradient are those of the dequantised "
              "W, bit for bit (%s)", rc ? lv_errmsg() : "ok");
    /* not recording, one row: the 4-bit matrix-vector kernel */
    lv_graph *g = lv_graph_new(NULL);
    lv_tensor *x1 = lv_slice(g, x, 0, 0, 1);
    lv_tensor *y1 = lv_linear(g, x1, wq, NULL), *y2 = lv_linear(g, x1, wd, NULL);
    float v1[64], v2[64];
    double e = 1.0;
    if (y1 && y2) {
        lv_tensor_to_f32(v1, y1);
        lv_tensor_to_f32(v2, y2);
        e = tu_rel_err_f(v1, v2, 64);
    }
    tu_assert(e <= 1e-6, "one row times an NF4 W as stored (no dequantised copy): relative "
              "error %.2e to the dequantised product", e);
    lv_graph_free(g);
    lv_tensor_free(w32);
    lv_tensor_free(wq);
    lv_tensor_free(wd);
    lv_tensor_free(x);
}

static void reference(void)
{
    struct ref_file rf;
    if (!ref_load(&rf, "nf4", "cd tests/reference && /usr/bin/python3 gen_nf4.py"))
        return;
    const struct ref_tensor *ids_r = ref_get(&rf, "ids", 1, (int64_t[]){ 12 });
    const struct ref_tensor *wq0 = ref_get(&rf, "wq0", 2, (int64_t[]){ 48, 48 });
    const struct ref_tensor *lg = ref_get(&rf, "logits", 2, (int64_t[]){ 12, 96 });
    const char *top = getenv("LV_TOP_SRCDIR");
    char path[1200];
    snprintf(path, sizeof path, "%s/tests/reference/llama-lm-f32", top && *top ? top : ".");
    struct lv_checkpoint ck;
    lv_llama *m = NULL;
    if (ids_r && wq0 && lg && lv_checkpoint_open(&ck, path, NULL, NULL) == LV_OK) {
        int rc = lv_llama_load(&m, &ck, 0);
        if (rc == LV_OK)
            rc = lv_llama_quantize(m, LV_NF4);
        bool bits = rc == LV_OK && m->layers[0].wq->dtype == LV_NF4 &&
                    m->lm_head->dtype == LV_NF4;
        float w[48 * 48], out[12 * 96];
        if (bits) {
            lv_tensor_to_f32(w, m->layers[0].wq);
            for (int i = 0; i < 48 * 48; i++)
                bits &= w[i] == (float)wq0->data[i];
        }
        tu_assert(bits, "--quant nf4 on the reference LM: layer 0's q projection dequantises "
                  "to gen_nf4.py's values bit for bit");
        int32_t ids[12];
        for (int i = 0; i < 12; i++)
            ids[i] = (int32_t)ids_r->data[i];
        if (rc == LV_OK)
            rc = lv_llama_forward(m, ids, 12, out, true);
        double e = rc == LV_OK ? tu_rel_err(out, lg->data, 12 * 96) : 1.0;
        tu_assert(e <= 1e-5, "NF4 logits against the float64 model with the same dequantised "
                  "weights: relative error %.2e", e);
        /* token by token: the matrix-vector path reads the 4-bit values as stored */
        double worst = 0;
        lv_llama_reset(m);
        for (int t = 0; rc == LV_OK && t < 12; t++) {
            float row[96];
            rc = lv_llama_forward(m, ids + t, 1, row, false);
            double mx = 0, d = 0;
            for (int v = 0; v < 96; v++) {
                mx = fmax(mx, fabs(lg->data[t * 96 + v]));
                d = fmax(d, fabs(row[v] - lg->data[t * 96 + v]));
            }
            worst = fmax(worst, d / mx);
        }
        tu_assert(rc == LV_OK && worst <= 1e-5, "NF4 decoding token by token (4-bit "
                  "matrix-vector products): worst relative error %.2e over 12 positions", worst);
        lv_llama_free(m);
        lv_checkpoint_close(&ck);
    }
    ref_done(&rf);
}

/* a checkpoint bitsandbytes already quantised is refused, naming what to load instead */
static void bnb_refused(void)
{
    const char *top = getenv("LV_TOP_SRCDIR"), *t0 = getenv("TMPDIR");
    char dir[300], cfg[1200], cmd[2600], st[400];
    snprintf(dir, sizeof dir, "%s/lv-bnb-XXXXXX", t0 && *t0 ? t0 : "/tmp");
    if (!mkdtemp(dir))
        return;
    snprintf(cfg, sizeof cfg, "%s/tests/reference/llama-lm-f32/config.json",
             top && *top ? top : ".");
    snprintf(cmd, sizeof cmd, "cp '%s' '%s/'", cfg, dir);
    uint8_t packed[64] = { 0 };
    float absmax[2] = { 1, 1 };
    lv_st_wtensor t[2] = {
        { .name = "model.layers.0.self_attn.q_proj.weight", .dtype = LV_ST_U8, .ndim = 2,
          .shape = { 64, 1 }, .data = packed },
        { .name = "model.layers.0.self_attn.q_proj.weight.absmax", .dtype = LV_ST_F32,
          .ndim = 1, .shape = { 2 }, .data = absmax },
    };
    snprintf(st, sizeof st, "%s/model.safetensors", dir);
    struct lv_checkpoint ck;
    bool made = system(cmd) == 0 && lv_st_write(st, t, 2, NULL) == LV_OK;
    int rc = made ? lv_checkpoint_open(&ck, dir, NULL, NULL) : LV_OK;
    if (made && rc == LV_OK)
        lv_checkpoint_close(&ck);
    tu_assert(made && rc != LV_OK && strstr(lv_errmsg(), "bitsandbytes") &&
                  strstr(lv_errmsg(), "full-precision"), "a bitsandbytes 4-bit checkpoint "
              "(*.absmax) is refused: %s", lv_errmsg());
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "nf4");
    bnb_refused();
    tables();
    round_trip();
    product();
    reference();
    return tu_finish();
}
