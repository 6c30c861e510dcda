/*
 * fuzz-gguf.c: libFuzzer target for the GGUF reader (lv_gguf_open_mem).
 *
 * Parses the input, then walks everything it exposes: every metadata value and array
 * element, every string's first and last byte, every tensor's first and last data byte, the
 * typed getters, and for small tensors of the convertible types the dequantization and the
 * conversions to Q8_0 and BF16 (so hostile scales reach the arithmetic). Seeds: tests/fuzz/gguf/.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "lavinia/error.h"

/* Conversions run only on tensors this small, to keep executions fast. */
#define FUZZ_MAX_CONVERT (1 << 14)

static volatile uint64_t sink;

static void touch_str(const lv_gguf_str *s)
{
    if (s->n)
        sink += (unsigned char)s->s[0] + (unsigned char)s->s[s->n - 1];
    sink += (unsigned char)s->s[s->n];          /* the NUL after the bytes */
}

static void walk_kv(const lv_gguf_file *f, const lv_gguf_kv *kv)
{
    int64_t iv;
    double dv;
    touch_str(&kv->key);
    if (kv->type == LV_GGUF_TYPE_STRING) {
        touch_str(&kv->v.str);
    } else if (kv->type == LV_GGUF_TYPE_ARRAY) {
        for (uint64_t i = 0; i < kv->n; i++) {
            if (kv->elem_type == LV_GGUF_TYPE_STRING)
                touch_str(&((const lv_gguf_str *)kv->v.arr)[i]);
            else if (lv_gguf_arr_get_int(f, kv, i, &iv) == LV_OK)
                sink += (uint64_t)iv;
            else if (lv_gguf_arr_get_float(f, kv, i, &dv) == LV_OK)
                sink += dv == dv;
            else if (kv->elem_type == LV_GGUF_TYPE_BOOL)
                sink += ((const bool *)kv->v.arr)[i];
        }
    } else {
        const char *s;
        bool b;
        if (lv_gguf_get_int(f, kv->key.s, &iv) == LV_OK)
            sink += (uint64_t)iv;
        if (lv_gguf_get_float(f, kv->key.s, &dv) == LV_OK)
            sink += dv == dv;
        if (lv_gguf_get_bool(f, kv->key.s, &b) == LV_OK)
            sink += b;
        if (lv_gguf_get_str(f, kv->key.s, &s, NULL) == LV_OK)
            sink += (unsigned char)s[0];
    }
}

static void walk_tensor(const lv_gguf_tensor *t)
{
    const uint8_t *d = t->data;
    if (t->nbytes)
        sink += d[0] + d[t->nbytes - 1];
    sink += strlen(t->name) + (uint64_t)t->shape[0] + (uint64_t)t->ne[0];
    if (lv_gguf_tensor_check_loadable(t) != LV_OK || t->nelem > FUZZ_MAX_CONVERT)
        return;
    uint8_t *out = malloc((size_t)t->nelem * 2 + 1);
    if (!out)
        return;
    if (lv_gguf_convert_tensor(t, LV_GGML_TYPE_BF16, out, (size_t)t->nelem * 2) == LV_OK &&
        t->nelem)
        sink += out[0] + out[2 * t->nelem - 1];
    if (lv_gguf_convert_tensor(t, LV_GGML_TYPE_Q8_0, out, (size_t)t->nelem * 2) == LV_OK &&
        t->nelem)
        sink += out[0];
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lv_gguf_file f;
    if (lv_gguf_open_mem(&f, data, size, "fuzz.gguf") != LV_OK)
        return 0;
    for (uint64_t i = 0; i < f.n_kv; i++)
        walk_kv(&f, &f.kv[i]);
    for (uint64_t i = 0; i < f.n_tensors; i++) {
        walk_tensor(&f.tensors[i]);
        sink += lv_gguf_find_tensor(&f, f.tensors[i].name) == &f.tensors[i];
    }
    sink += lv_gguf_find(&f, "general.architecture") != NULL;
    lv_gguf_close(&f);
    return 0;
}
