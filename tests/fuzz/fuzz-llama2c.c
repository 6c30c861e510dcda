/*
 * fuzz-llama2c.c: libFuzzer target for the llama2.c checkpoint and tokenizer.bin readers.
 *
 * The input is parsed twice: as a whole as a version-0 checkpoint (lv_l2c_open_mem), and,
 * after its first byte, as a tokenizer.bin whose vocabulary size is 1 + that byte. Whatever
 * opens is walked: the first and last byte of every weight view, every piece and score.
 * Seeds: tests/fuzz/llama2c/ (small valid and invalid checkpoints; "tok-*" seeds are a
 * vocabulary-size byte followed by a tokenizer.bin).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stddef.h>
#include <stdint.h>

#include "io/llama2c.h"
#include "lavinia/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    volatile uint8_t sink = 0;
    volatile float fsink = 0.0f;
    lv_l2c_file f;
    lv_l2c_tensor t;

    if (lv_l2c_open_mem(&f, data, size, "fuzz.bin") == LV_OK) {
        for (int64_t i = 0; i < lv_l2c_tensor_count(&f); i++) {
            if (lv_l2c_tensor_at(&f, i, &t) != LV_OK || t.nbytes == 0)
                continue;
            sink ^= ((const uint8_t *)t.data)[0];
            sink ^= ((const uint8_t *)t.data)[t.nbytes - 1];
        }
        if (lv_l2c_tensor_find(&f, "model.norm.weight", &t) == LV_OK)
            sink ^= ((const uint8_t *)t.data)[t.nbytes - 1];
        if (lv_l2c_tensor_find(&f, "lm_head.weight", &t) == LV_OK)
            sink ^= ((const uint8_t *)t.data)[t.nbytes - 1];
        lv_l2c_close(&f);
    }

    if (size >= 1) {
        lv_l2c_tokenizer tok;
        if (lv_l2c_tokenizer_open_mem(&tok, data + 1, size - 1, "fuzz-tokenizer.bin",
                                      1 + (int64_t)data[0]) == LV_OK) {
            for (int64_t id = 0; id < tok.vocab_size; id++) {
                size_t len;
                const char *s = lv_l2c_tokenizer_piece(&tok, id, &len);
                sink ^= (uint8_t)s[len];          /* the terminating NUL */
                if (len)
                    sink ^= (uint8_t)(s[0] ^ s[len - 1]);
                fsink += tok.scores[id];
            }
            lv_l2c_tokenizer_close(&tok);
        }
    }
    (void)sink;
    (void)fsink;
    return 0;
}
