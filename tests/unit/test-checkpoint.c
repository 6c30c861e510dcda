/*
 * test-checkpoint.c: one view of every checkpoint format, and conversions between them.
 *
 * A small llama2.c model written by the test (and the conformance stories260K.bin when it is
 * there) goes llama2.c -> Hugging Face directory -> GGUF -> Hugging Face directory; every
 * value must survive bit for bit, with q/k rows permuted between Meta and HF order on the
 * way and back. Hostile cases: a config whose shapes disagree with the tensors, a missing
 * tensor, an unexpected tensor, an mmproj given as the model.
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/checkpoint.h"
#include "io/gguf.h"
#include "io/names.h"
#include "io/safetensors.h"
#include "testutil.h"

static char tmpdir[256];

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

/* a llama2.c version-0 model: dim 8, hidden 12, 2 layers, 2 heads, 1 kv head, vocab 10,
 * seq 4, shared classifier; values i * 0.001 - k so every float is distinct */
static void write_l2c(const char *path)
{
    int32_t hdr[7] = { 8, 12, 2, 2, 1, 10, 4 };
    int64_t D = 8, F = 12, L = 2, KVD = 4, V = 10, T = 4, HD = 4;
    int64_t n = V * D + L * D + L * D * D + 2 * L * KVD * D + L * D * D + L * D + 2 * L * F * D +
                L * D * F + D + 2 * T * HD / 2;
    FILE *f = fopen(path, "wb");
    fwrite(hdr, 4, 7, f);
    for (int64_t i = 0; i < n; i++) {
        float v = (float)i * 0.001f - 1.0f;
        fwrite(&v, 4, 1, f);
    }
    fclose(f);
}

/* every tensor of a equals the one of b with the same name, bytes compared after bringing
 * q/k rows to the same order */
static bool same_values(const struct lv_checkpoint *a, const struct lv_checkpoint *b,
                        const char *what)
{
    bool ok = a->n_tensors == b->n_tensors;
    for (int i = 0; ok && i < a->n_tensors; i++) {
        const struct lv_ckpt_tensor *ta = &a->tensors[i], *tb = lv_checkpoint_find(b, ta->name);
        if (!tb || tb->nbytes != ta->nbytes || tb->type != ta->type) {
            printf("# %s: '%s' missing or of another size/type\n", what, ta->name);
            return false;
        }
        const void *da = ta->data;
        void *tmp = NULL;
        bool is_k;
        if (ta->meta_qk != tb->meta_qk && lv_names_is_qk(ta->name, &is_k)) {
            long heads = (long)(is_k ? a->config.n_kv_heads : a->config.n_heads);
            size_t row = (size_t)(ta->nbytes / (uint64_t)ta->shape[0]);
            tmp = malloc((size_t)ta->nbytes);
            if (ta->meta_qk)
                lv_qk_meta_to_hf(tmp, ta->data, heads, (long)a->config.head_dim, row);
            else
                lv_qk_hf_to_meta(tmp, ta->data, heads, (long)a->config.head_dim, row);
            da = tmp;
        }
        if (memcmp(da, tb->data, (size_t)ta->nbytes) != 0) {
            printf("# %s: '%s' differs\n", what, ta->name);
            ok = false;
        }
        free(tmp);
    }
    return ok;
}

static void round_trip(const char *model, const char *label)
{
    char hf1[300], gguf[300], hf2[300];
    path_in(hf1, sizeof hf1, "hf1");
    path_in(gguf, sizeof gguf, "model.gguf");
    path_in(hf2, sizeof hf2, "hf2");
    struct lv_checkpoint a, b, c, d;
    if (!tu_assert(lv_checkpoint_open(&a, model, NULL, NULL) == LV_OK, "%s: opens (%s)", label,
                   lv_errmsg()))
        return;
    tu_assert(a.format == LV_CKPT_LLAMA2C && a.config.qk_layout == LV_QK_META,
              "%s: read as llama2.c with Meta q/k order", label);
    tu_assert(lv_checkpoint_write_hf(&a, hf1, 0) == LV_OK, "%s: -> Hugging Face (%s)", label,
              lv_errmsg());
    tu_assert(lv_checkpoint_open(&b, hf1, NULL, NULL) == LV_OK, "%s: HF directory opens (%s)",
              label, lv_errmsg());
    tu_assert(b.format == LV_CKPT_HF_DIR && b.config.dim == a.config.dim &&
                  b.config.n_kv_heads == a.config.n_kv_heads && b.config.tied == a.config.tied,
              "%s: HF config keeps the hyper-parameters", label);
    tu_assert(same_values(&a, &b, "llama2.c -> HF"), "%s: llama2.c -> HF keeps every value "
              "(q/k rows permuted)", label);
    tu_assert(lv_checkpoint_write_gguf(&b, gguf) == LV_OK, "%s: HF -> GGUF (%s)", label,
              lv_errmsg());
    tu_assert(lv_checkpoint_open(&c, gguf, NULL, NULL) == LV_OK, "%s: GGUF opens (%s)", label,
              lv_errmsg());
    tu_assert(same_values(&b, &c, "HF -> GGUF"), "%s: HF -> GGUF keeps every value", label);
    tu_assert(same_values(&a, &c, "llama2.c vs GGUF"),
              "%s: GGUF holds the llama2.c bytes (both Meta order)", label);
    tu_assert(lv_checkpoint_write_hf(&c, hf2, 0) == LV_OK, "%s: GGUF -> HF (%s)", label,
              lv_errmsg());
    tu_assert(lv_checkpoint_open(&d, hf2, NULL, NULL) == LV_OK, "%s: second HF opens (%s)", label,
              lv_errmsg());
    tu_assert(same_values(&b, &d, "HF -> GGUF -> HF"),
              "%s: llama2.c -> HF -> GGUF -> HF is bit-exact", label);
    lv_checkpoint_close(&a);
    lv_checkpoint_close(&b);
    lv_checkpoint_close(&c);
    lv_checkpoint_close(&d);
}

/* rewrite hf1/config.json with one field changed */
static void edit_config(const char *from, const char *to)
{
    char path[300];
    path_in(path, sizeof path, "hf1/config.json");
    FILE *f = fopen(path, "rb");
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strstr(buf, from), out[8300];
    if (!p) {
        tu_assert(false, "config.json has %s", from);
        return;
    }
    snprintf(out, sizeof out, "%.*s%s%s", (int)(p - buf), buf, to, p + strlen(from));
    f = fopen(path, "wb");
    fputs(out, f);
    fclose(f);
}

static void hostile(void)
{
    char hf1[300];
    path_in(hf1, sizeof hf1, "hf1");
    struct lv_checkpoint ck;
    edit_config("\"intermediate_size\": 12", "\"intermediate_size\": 16");
    tu_assert(lv_checkpoint_open(&ck, hf1, NULL, NULL) != LV_OK &&
                  strstr(lv_errmsg(), "gate_proj") && strstr(lv_errmsg(), "config says"),
              "a config whose shapes disagree with the tensors: %s", lv_errmsg());
    edit_config("\"intermediate_size\": 16", "\"intermediate_size\": 12");
    edit_config("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    tu_assert(lv_checkpoint_open(&ck, hf1, NULL, NULL) != LV_OK && strstr(lv_errmsg(), "missing") &&
                  strstr(lv_errmsg(), "layers.2"),
              "a missing tensor is named: %s", lv_errmsg());
    edit_config("\"num_hidden_layers\": 3", "\"num_hidden_layers\": 1");
    tu_assert(lv_checkpoint_open(&ck, hf1, NULL, NULL) != LV_OK &&
                  strstr(lv_errmsg(), "unexpected") && strstr(lv_errmsg(), "layers.1"),
              "an unexpected tensor is named: %s", lv_errmsg());
    edit_config("\"num_hidden_layers\": 1", "\"num_hidden_layers\": 2");
    tu_assert(lv_checkpoint_open(&ck, hf1, NULL, NULL) == LV_OK, "the restored config opens");
    lv_checkpoint_close(&ck);
    char empty[300];
    path_in(empty, sizeof empty, "empty");
    mkdir(empty, 0700);
    tu_assert(lv_checkpoint_open(&ck, empty, NULL, NULL) != LV_OK &&
                  strstr(lv_errmsg(), "config.json"),
              "a directory without config.json: %s", lv_errmsg());
    tu_assert(lv_checkpoint_open(&ck, "/nonexistent/model.gguf", NULL, NULL) != LV_OK &&
                  strstr(lv_errmsg(), "/nonexistent/model.gguf"),
              "a missing file is named: %s", lv_errmsg());
    char model[300];
    path_in(model, sizeof model, "small.bin");
    tu_assert(lv_checkpoint_open(&ck, model, model, NULL) != LV_OK &&
                  strstr(lv_errmsg(), "mmproj"),
              "--mmproj with a llama2.c model is refused: %s", lv_errmsg());
}

/* --- GGUF: quantised weights, an mmproj, a LoRA adapter ------------------------------- */

enum { GD = 32, GF = 64, GV = 16, GH = 2 };
static float gvals[8][GF * GD];

static void fill(float *x, int n, int seed)
{
    for (int i = 0; i < n; i++)
        x[i] = (float)((i * 7 + seed * 13) % 29) * 0.0625f - 0.875f;
}

/* a one-layer llama GGUF, dim 32, hidden 64, 2 heads, vocab 16; matrices of type mtype */
static void write_gguf_model(const char *path, uint32_t mtype)
{
    static uint8_t q[8][GF * GD * 2];
    lv_gguf_writer *w = lv_gguf_writer_new();
    lv_gguf_writer_add_str(w, "general.architecture", "llama");
    lv_gguf_writer_add_u32(w, "llama.block_count", 1);
    lv_gguf_writer_add_u32(w, "llama.embedding_length", GD);
    lv_gguf_writer_add_u32(w, "llama.feed_forward_length", GF);
    lv_gguf_writer_add_u32(w, "llama.attention.head_count", GH);
    lv_gguf_writer_add_u32(w, "llama.context_length", 64);
    static const char *const mats[] = { "blk.0.attn_q.weight", "blk.0.attn_k.weight",
                                        "blk.0.attn_v.weight", "blk.0.attn_output.weight",
                                        "blk.0.ffn_gate.weight", "blk.0.ffn_up.weight",
                                        "blk.0.ffn_down.weight", "token_embd.weight" };
    for (int i = 0; i < 8; i++) {
        int64_t shape[2] = { i < 4 ? GD : i < 6 ? GF : i == 6 ? GD : GV, i == 6 ? GF : GD };
        int64_t n = shape[0] * shape[1];
        fill(gvals[i], (int)n, i);
        const void *data = gvals[i];
        uint64_t nbytes = (uint64_t)n * 4;
        if (mtype == LV_GGML_TYPE_Q8_0) {
            lv_gguf_quantize_q8_0(gvals[i], q[i], n);
            lv_gguf_dequantize(LV_GGML_TYPE_Q8_0, q[i], gvals[i], n);
            data = q[i];
            nbytes = lv_ggml_nbytes(mtype, n);
        }
        lv_gguf_writer_add_tensor(w, mats[i], mtype, 2, shape, data, nbytes);
    }
    static float ones[GD];
    for (int i = 0; i < GD; i++)
        ones[i] = 1.0f + (float)i / 64.0f;
    int64_t d = GD;
    lv_gguf_writer_add_tensor(w, "blk.0.attn_norm.weight", 0, 1, &d, ones, sizeof ones);
    lv_gguf_writer_add_tensor(w, "blk.0.ffn_norm.weight", 0, 1, &d, ones, sizeof ones);
    lv_gguf_writer_add_tensor(w, "output_norm.weight", 0, 1, &d, ones, sizeof ones);
    if (lv_gguf_writer_write(w, path) != LV_OK)
        printf("# %s\n", lv_errmsg());
    lv_gguf_writer_free(w);
}

/* a clip mmproj for it: vision dim 32, hidden 64, 1 layer, image 28, patch 14; the MLP in
 * the legacy naming (ffn_down holds fc1) */
static void write_mmproj(const char *path)
{
    static float buf[GD * 3 * 14 * 14];
    lv_gguf_writer *w = lv_gguf_writer_new();
    lv_gguf_writer_add_str(w, "general.architecture", "clip");
    lv_gguf_writer_add_bool(w, "clip.has_vision_encoder", true);
    lv_gguf_writer_add_bool(w, "clip.has_llava_projector", true);
    lv_gguf_writer_add_str(w, "clip.projector_type", "mlp");
    lv_gguf_writer_add_u32(w, "clip.vision.embedding_length", GD);
    lv_gguf_writer_add_u32(w, "clip.vision.feed_forward_length", GF);
    lv_gguf_writer_add_u32(w, "clip.vision.block_count", 1);
    lv_gguf_writer_add_u32(w, "clip.vision.attention.head_count", 2);
    lv_gguf_writer_add_u32(w, "clip.vision.image_size", 28);
    lv_gguf_writer_add_u32(w, "clip.vision.patch_size", 14);
    static const struct {
        const char *name;
        int ndim;
        int64_t shape[4];
    } t[] = {
        { "v.class_embd", 1, { GD } },
        { "v.patch_embd.weight", 4, { GD, 3, 14, 14 } },
        { "v.position_embd.weight", 2, { 5, GD } },
        { "v.pre_ln.weight", 1, { GD } }, { "v.pre_ln.bias", 1, { GD } },
        { "v.blk.0.attn_q.weight", 2, { GD, GD } }, { "v.blk.0.attn_q.bias", 1, { GD } },
        { "v.blk.0.attn_k.weight", 2, { GD, GD } }, { "v.blk.0.attn_k.bias", 1, { GD } },
        { "v.blk.0.attn_v.weight", 2, { GD, GD } }, { "v.blk.0.attn_v.bias", 1, { GD } },
        { "v.blk.0.attn_out.weight", 2, { GD, GD } }, { "v.blk.0.attn_out.bias", 1, { GD } },
        { "v.blk.0.ln1.weight", 1, { GD } }, { "v.blk.0.ln1.bias", 1, { GD } },
        { "v.blk.0.ln2.weight", 1, { GD } }, { "v.blk.0.ln2.bias", 1, { GD } },
        { "v.blk.0.ffn_down.weight", 2, { GF, GD } }, { "v.blk.0.ffn_down.bias", 1, { GF } },
        { "v.blk.0.ffn_up.weight", 2, { GD, GF } }, { "v.blk.0.ffn_up.bias", 1, { GD } },
        { "mm.0.weight", 2, { GD, GD } }, { "mm.0.bias", 1, { GD } },
        { "mm.2.weight", 2, { GD, GD } }, { "mm.2.bias", 1, { GD } },
    };
    fill(buf, GD * 3 * 14 * 14, 3);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        int64_t n = 1;
        for (int d = 0; d < t[i].ndim; d++)
            n *= t[i].shape[d];
        lv_gguf_writer_add_tensor(w, t[i].name, 0, t[i].ndim, t[i].shape, buf,
                                  (uint64_t)n * 4);
    }
    if (lv_gguf_writer_write(w, path) != LV_OK)
        printf("# %s\n", lv_errmsg());
    lv_gguf_writer_free(w);
}

static void write_lora(const char *path)
{
    static float buf[GD * 2];
    lv_gguf_writer *w = lv_gguf_writer_new();
    lv_gguf_writer_add_str(w, "general.architecture", "llama");
    lv_gguf_writer_add_str(w, "general.type", "adapter");
    lv_gguf_writer_add_str(w, "adapter.type", "lora");
    lv_gguf_writer_add_f32(w, "adapter.lora.alpha", 16.0f);
    int64_t a[2] = { 2, GD }, b[2] = { GD, 2 };
    lv_gguf_writer_add_tensor(w, "blk.0.attn_q.weight.lora_a", 0, 2, a, buf, sizeof buf);
    lv_gguf_writer_add_tensor(w, "blk.0.attn_q.weight.lora_b", 0, 2, b, buf, sizeof buf);
    if (lv_gguf_writer_write(w, path) != LV_OK)
        printf("# %s\n", lv_errmsg());
    lv_gguf_writer_free(w);
}

static void gguf_cases(void)
{
    char model[300], mmproj[300], lora[300], hf[300];
    path_in(model, sizeof model, "q8.gguf");
    path_in(mmproj, sizeof mmproj, "mmproj.gguf");
    path_in(lora, sizeof lora, "lora.gguf");
    path_in(hf, sizeof hf, "hf-q8");
    write_gguf_model(model, LV_GGML_TYPE_Q8_0);
    struct lv_checkpoint ck, back;
    if (!tu_assert(lv_checkpoint_open(&ck, model, NULL, NULL) == LV_OK, "Q8_0 GGUF opens (%s)",
                   lv_errmsg()))
        return;
    const struct lv_ckpt_tensor *q = lv_checkpoint_find(&ck, "model.layers.0.self_attn.q_proj.weight");
    tu_assert(q && q->type == LV_CKPT_Q8_0 && q->meta_qk && ck.config.tied &&
                  ck.config.n_kv_heads == GH && ck.config.qk_layout == LV_QK_META,
              "Q8_0 kept as stored, Meta q/k rows, tied, kv heads default to heads");
    tu_assert(lv_checkpoint_write_hf(&ck, hf, 0) == LV_OK, "Q8_0 GGUF -> HF (%s)", lv_errmsg());
    if (tu_assert(lv_checkpoint_open(&back, hf, NULL, NULL) == LV_OK, "its HF directory opens")) {
        const struct lv_ckpt_tensor *hq = lv_checkpoint_find(&back, q->name);
        const struct lv_ckpt_tensor *hv = lv_checkpoint_find(&back, "model.layers.0.self_attn.v_proj.weight");
        static float want[GD * GD];
        lv_qk_meta_to_hf(want, gvals[0], GH, GD / GH, GD * 4);
        tu_assert(hq && hq->type == LV_CKPT_F32 && memcmp(hq->data, want, sizeof want) == 0 &&
                      hv && memcmp(hv->data, gvals[2], sizeof want) == 0,
                  "Q8_0 dequantised exactly to F32, q rows permuted to HF order");
        lv_checkpoint_close(&back);
    }
    lv_checkpoint_close(&ck);

    write_mmproj(mmproj);
    if (tu_assert(lv_checkpoint_open(&ck, model, mmproj, NULL) == LV_OK,
                  "model + mmproj open as LLaVA (%s)", lv_errmsg())) {
        const struct lv_ckpt_tensor *fc1 = lv_checkpoint_find(&ck, "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight");
        const struct lv_ckpt_tensor *fc1b = lv_checkpoint_find(&ck, "vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias");
        tu_assert(ck.config.arch == LV_ARCH_LLAVA && ck.config.has_vision &&
                      ck.config.vision.dim == GD && ck.config.vision_feature_layer == -1 &&
                      fc1 && fc1->shape[0] == GF && strcmp(fc1->file_name, "v.blk.0.ffn_down.weight") == 0 &&
                      fc1b && fc1b->shape[0] == GF,
                  "mmproj: vision config, legacy ffn_down read as fc1 by its shape");
        char again[300], mm[400];
        path_in(again, sizeof again, "again.gguf");
        lv_checkpoint_mmproj_path(again, mm, sizeof mm);
        tu_assert(lv_checkpoint_write_gguf(&ck, again) == LV_OK && access(mm, R_OK) == 0,
                  "LLaVA -> GGUF writes the text model and %s (%s)", mm, lv_errmsg());
        lv_checkpoint_close(&ck);
        struct lv_checkpoint re;
        if (tu_assert(lv_checkpoint_open(&re, again, mm, NULL) == LV_OK, "they reopen as LLaVA "
                      "(%s)", lv_errmsg())) {
            tu_assert(re.config.has_vision && re.config.vision.n_layers == 1,
                      "the tower keeps its 1 block");
            lv_checkpoint_close(&re);
        }
    }
    tu_assert(lv_checkpoint_open(&ck, mmproj, NULL, NULL) == LV_OK && !ck.has_config &&
                  strstr(ck.summary, "mmproj"), "an mmproj alone is listed: %s", ck.summary);
    lv_checkpoint_close(&ck);
    tu_assert(lv_checkpoint_open(&ck, mmproj, mmproj, NULL) != LV_OK &&
                  strstr(lv_errmsg(), "--mmproj"), "an mmproj as the model with --mmproj: %s",
              lv_errmsg());

    write_lora(lora);
    if (tu_assert(lv_checkpoint_open(&ck, lora, NULL, NULL) == LV_OK, "a LoRA GGUF opens (%s)",
                  lv_errmsg())) {
        const struct lv_ckpt_tensor *b = lv_checkpoint_find(&ck, "model.layers.0.self_attn.q_proj.lora_B.weight");
        const struct lv_ckpt_tensor *a = lv_checkpoint_find(&ck, "model.layers.0.self_attn.q_proj.lora_A.weight");
        tu_assert(!ck.has_config && strstr(ck.summary, "alpha 16") && a && !a->meta_qk && b &&
                      b->meta_qk, "LoRA adapter: PEFT-style names, B of q in Meta order (%s)",
                  ck.summary);
        tu_assert(lv_checkpoint_write_hf(&ck, hf, 0) != LV_OK, "an adapter is not a model to "
                  "convert: %s", lv_errmsg());
        lv_checkpoint_close(&ck);
    }
}

/* llama2.c model + tokenizer.bin -> GGUF carries the vocabulary as llama.cpp's converter does */
static void l2c_vocab_case(void)
{
    char model[300], tok[300], out[300];
    path_in(model, sizeof model, "small.bin");
    path_in(tok, sizeof tok, "tokenizer.bin");
    path_in(out, sizeof out, "vocab.gguf");
    static const char *const pieces[10] = { "<unk>", "<s>", "</s>", "<0x0A>", "\xe2\x96\x81" "a",
                                            "b", "c", "ab", "abc", "\xe2\x96\x81" };
    FILE *f = fopen(tok, "wb");
    uint32_t maxlen = 6;
    fwrite(&maxlen, 4, 1, f);
    for (int i = 0; i < 10; i++) {
        float score = -(float)i;
        int32_t len = (int32_t)strlen(pieces[i]);
        fwrite(&score, 4, 1, f);
        fwrite(&len, 4, 1, f);
        fwrite(pieces[i], 1, (size_t)len, f);
    }
    fclose(f);
    struct lv_checkpoint ck;
    if (!tu_assert(lv_checkpoint_open(&ck, model, NULL, tok) == LV_OK, "model + tokenizer.bin "
                   "open (%s)", lv_errmsg()))
        return;
    tu_assert(strstr(ck.tokenizer, "10 pieces") != NULL, "tokenizer: %s", ck.tokenizer);
    tu_assert(lv_checkpoint_write_gguf(&ck, out) == LV_OK, "-> GGUF (%s)", lv_errmsg());
    lv_checkpoint_close(&ck);
    lv_gguf_file g;
    if (tu_assert(lv_gguf_open(&g, out) == LV_OK, "the GGUF opens")) {
        const lv_gguf_str *tokens;
        const int32_t *types;
        const float *scores;
        uint64_t n = 0, nt = 0, ns = 0;
        lv_gguf_get_str_arr(&g, "tokenizer.ggml.tokens", &tokens, &n);
        lv_gguf_get_arr(&g, "tokenizer.ggml.token_type", LV_GGUF_TYPE_INT32,
                        (const void **)&types, &nt);
        lv_gguf_get_arr(&g, "tokenizer.ggml.scores", LV_GGUF_TYPE_FLOAT32,
                        (const void **)&scores, &ns);
        tu_assert(n == 10 && nt == 10 && ns == 10 && strcmp(tokens[4].s, pieces[4]) == 0 &&
                      types[0] == 2 && types[1] == 3 && types[3] == 6 && types[4] == 1 &&
                      scores[9] == -9.0f,
                  "tokens, scores and types (unknown, control, byte, normal) written");
        lv_gguf_close(&g);
    }
    if (tu_assert(lv_checkpoint_open(&ck, out, NULL, NULL) == LV_OK, "it reopens"))
        tu_assert(strstr(ck.tokenizer, "10 tokens") != NULL, "as %s", ck.tokenizer);
    lv_checkpoint_close(&ck);
}

/* --- Hugging Face: shards, side files, a lone safetensors file ------------------------ */

static void hf_cases(void)
{
    char hf1[300], sh[300], path[400], lone[400];
    path_in(hf1, sizeof hf1, "hf1");
    path_in(sh, sizeof sh, "sharded");
    snprintf(path, sizeof path, "%s/tokenizer.json", hf1);
    FILE *f = fopen(path, "w");   /* a small valid tokenizer.json (8 pieces) */
    fputs("{\"model\": {\"type\": \"BPE\", \"unk_token\": \"<unk>\", \"vocab\": "
          "{\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"a\": 3, \"b\": 4, \"ab\": 5, "
          "\"\\u2581\": 6, \"\\u2581ab\": 7}, \"merges\": [\"a b\", \"\\u2581 ab\"]},"
          " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": "
          "\"Prepend\", \"prepend\": \"\\u2581\"}, {\"type\": \"Replace\", \"pattern\": "
          "{\"String\": \" \"}, \"content\": \"\\u2581\"}]}}\n", f);
    fclose(f);
    struct lv_checkpoint a, b;
    if (!tu_assert(lv_checkpoint_open(&a, hf1, NULL, NULL) == LV_OK, "hf1 opens"))
        return;
    tu_assert(strstr(a.tokenizer, "tokenizer.json") != NULL, "the tokenizer is listed: %s",
              a.tokenizer);
    tu_assert(lv_checkpoint_write_hf(&a, hf1, 0) != LV_OK && strstr(lv_errmsg(), "input"),
              "writing over the input directory is refused: %s", lv_errmsg());
    tu_assert(lv_checkpoint_write_hf(&a, sh, 1024) == LV_OK, "written in 1 KiB shards (%s)",
              lv_errmsg());
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", sh);
    tu_assert(access(path, R_OK) == 0, "an index is written");
    snprintf(path, sizeof path, "%s/tokenizer.json", sh);
    tu_assert(access(path, R_OK) == 0, "tokenizer.json is copied");
    char gg[400];
    path_in(gg, sizeof gg, "with-vocab.gguf");
    if (tu_assert(lv_checkpoint_write_gguf(&a, gg) == LV_OK, "HF with tokenizer.json -> GGUF "
                  "(%s)", lv_errmsg())) {
        lv_gguf_file g;
        const lv_gguf_str *tokens;
        const float *scores;
        uint64_t nt = 0, ns = 0;
        if (lv_gguf_open(&g, gg) == LV_OK) {
            lv_gguf_get_str_arr(&g, "tokenizer.ggml.tokens", &tokens, &nt);
            lv_gguf_get_arr(&g, "tokenizer.ggml.scores", LV_GGUF_TYPE_FLOAT32,
                            (const void **)&scores, &ns);
            tu_assert(nt == 10 && ns == 10 && strcmp(tokens[7].s, "\xe2\x96\x81" "ab") == 0 &&
                          scores[5] == 0.0f && scores[7] == -1.0f &&
                          strcmp(tokens[9].s, "[PAD9]") == 0 && scores[9] == -1000.0f,
                      "the vocabulary goes into GGUF, merge ranks as scores, padded to the "
                      "model's 10 rows");
            lv_gguf_close(&g);
        }
    }
    if (tu_assert(lv_checkpoint_open(&b, sh, NULL, NULL) == LV_OK, "the sharded directory "
                  "opens (%s)", lv_errmsg())) {
        lv_st_set set;
        if (lv_st_set_open_dir(&set, sh) == LV_OK) {
            tu_assert(set.n_files > 2, "%d shards", set.n_files);
            lv_st_set_close(&set);
        }
        tu_assert(same_values(&a, &b, "sharded"), "the shards hold every value");
        lv_checkpoint_close(&b);
    }
    lv_checkpoint_close(&a);
    snprintf(lone, sizeof lone, "%s/model.safetensors", hf1);
    if (tu_assert(lv_checkpoint_open(&a, lone, NULL, NULL) == LV_OK, "a lone safetensors "
                  "file opens")) {
        tu_assert(!a.has_config && a.format == LV_CKPT_SAFETENSORS &&
                      lv_checkpoint_find(&a, "model.norm.weight"), "tensors only, by name");
        tu_assert(lv_checkpoint_write_gguf(&a, path) != LV_OK && strstr(lv_errmsg(), "config"),
                  "converting it is refused: %s", lv_errmsg());
        lv_checkpoint_close(&a);
    }
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "checkpoint");
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/lv-ckpt-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 99;
    }
    char model[300];
    path_in(model, sizeof model, "small.bin");
    write_l2c(model);
    round_trip(model, "small llama2.c model");
    hostile();
    hf_cases();
    gguf_cases();
    l2c_vocab_case();

    char conf[1024];
    const char *dir = getenv("LAVINIA_CONFORMANCE_DIR"), *top = getenv("LV_TOP_SRCDIR");
    if (dir)
        snprintf(conf, sizeof conf, "%s/stories260K.bin", dir);
    else
        snprintf(conf, sizeof conf, "%s/../shared/conformance/stories260K.bin", top ? top : ".");
    if (access(conf, R_OK) == 0) {
        struct lv_checkpoint ck;
        if (tu_assert(lv_checkpoint_open(&ck, conf, NULL, NULL) == LV_OK, "stories260K opens")) {
            const struct lv_model_config *c = &ck.config;
            tu_assert(c->dim == 64 && c->hidden == 172 && c->n_layers == 5 && c->n_heads == 8 &&
                          c->n_kv_heads == 4 && c->vocab == 512 && c->tied,
                      "stories260K: dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads, "
                      "vocab 512, tied");
            lv_checkpoint_close(&ck);
        }
        round_trip(conf, "stories260K");
    } else {
        printf("skipped: conformance data not found (%s)\n", conf);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", tmpdir);
    return tu_finish();
}
