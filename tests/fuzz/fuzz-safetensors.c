/*
 * fuzz-safetensors.c: libFuzzer target for the safetensors reader (src/io/safetensors.c).
 *
 * Parses the input with lv_st_open_mem and, when it is accepted, walks everything the
 * reader hands out: each tensor's first and last byte (which must lie in the buffer), its
 * lookup by name, its lavinia dtype, and every metadata key and value. ASan and UBSan catch
 * the rest. Seeds: tests/fuzz/safetensors/.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lv_st_file f;
    volatile uint8_t sink = 0;
    if (lv_st_open_mem(&f, data, size, "fuzz.safetensors") != 0)
        return 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const lv_st_tensor *t = &f.tensors[i];
        if (t->nbytes > 0) {
            if (t->data < data || t->data + t->nbytes > data + size)
                abort();
            sink ^= t->data[0];
            sink ^= t->data[t->nbytes - 1];
        }
        if (lv_st_find(&f, t->name) != t)
            abort();
        sink ^= (uint8_t)strlen(lv_st_dtype_name(t->dtype));
        lv_dtype d;
        sink ^= (uint8_t)lv_st_tensor_lv_dtype(&f, t, &d);
    }
    for (int i = 0; i < f.n_meta; i++) {
        sink ^= (uint8_t)strlen(f.meta[i].key);
        sink ^= (uint8_t)strlen(f.meta[i].value);
        if (lv_st_meta_get(&f, f.meta[i].key) == NULL)
            abort();
    }
    (void)sink;
    lv_st_close(&f);
    return 0;
}
