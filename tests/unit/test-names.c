/*
 * test-names.c: the cross-format name map (FORMATS.md §7, §2.8, §4.3) and the rotary q/k
 * row permutation between Meta and Hugging Face order (FORMATS.md 4.2).
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include <stdio.h>
#include <string.h>

#include "io/names.h"
#include "testutil.h"

static void gguf_pair(const char *gguf, const char *canonical)
{
    char a[160], b[160];
    bool ok1 = lv_names_gguf_to_canonical(gguf, a, sizeof a);
    bool ok2 = lv_names_canonical_to_gguf(canonical, b, sizeof b);
    tu_assert(ok1 && ok2 && strcmp(a, canonical) == 0 && strcmp(b, gguf) == 0, "%s <-> %s", gguf,
              canonical);
}

static void hf_canonical(const char *name, const char *want)
{
    char out[160];
    tu_assert(lv_names_hf_canonical(name, out, sizeof out) && strcmp(out, want) == 0,
              "%s is %s (got %s)", name, want, out);
}

int main(int argc, char **argv)
{
    tu_init(argc, argv, "names");
    gguf_pair("token_embd.weight", "model.embed_tokens.weight");
    gguf_pair("output_norm.weight", "model.norm.weight");
    gguf_pair("output.weight", "lm_head.weight");
    gguf_pair("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight");
    gguf_pair("blk.31.attn_q.weight", "model.layers.31.self_attn.q_proj.weight");
    gguf_pair("blk.7.attn_k.weight", "model.layers.7.self_attn.k_proj.weight");
    gguf_pair("blk.7.attn_v.weight", "model.layers.7.self_attn.v_proj.weight");
    gguf_pair("blk.7.attn_output.weight", "model.layers.7.self_attn.o_proj.weight");
    gguf_pair("blk.12.ffn_norm.weight", "model.layers.12.post_attention_layernorm.weight");
    gguf_pair("blk.2.ffn_gate.weight", "model.layers.2.mlp.gate_proj.weight");
    gguf_pair("blk.2.ffn_up.weight", "model.layers.2.mlp.up_proj.weight");
    gguf_pair("blk.2.ffn_down.weight", "model.layers.2.mlp.down_proj.weight");
    gguf_pair("v.class_embd", "vision_tower.vision_model.embeddings.class_embedding");
    gguf_pair("v.patch_embd.weight", "vision_tower.vision_model.embeddings.patch_embedding.weight");
    gguf_pair("v.pre_ln.bias", "vision_tower.vision_model.pre_layrnorm.bias");
    gguf_pair("v.blk.22.attn_out.bias", "vision_tower.vision_model.encoder.layers.22.self_attn.out_proj.bias");
    gguf_pair("v.blk.0.ln2.weight", "vision_tower.vision_model.encoder.layers.0.layer_norm2.weight");
    gguf_pair("v.blk.3.ffn_down.weight", "vision_tower.vision_model.encoder.layers.3.mlp.fc1.weight");
    gguf_pair("mm.0.weight", "multi_modal_projector.linear_1.weight");
    gguf_pair("mm.2.bias", "multi_modal_projector.linear_2.bias");
    char out[160];
    tu_assert(!lv_names_gguf_to_canonical("blk.x.attn_q.weight", out, sizeof out) &&
                  !lv_names_gguf_to_canonical("blk.01.attn_q.weight", out, sizeof out) &&
                  !lv_names_gguf_to_canonical("blk.3.attn_qq.weight", out, sizeof out) &&
                  !lv_names_gguf_to_canonical("rope_freqs.weight", out, sizeof out),
              "malformed or unknown GGUF names have no canonical name");
    tu_assert(!lv_names_gguf_to_canonical("token_embd.weight", out, 8), "a short buffer fails");

    hf_canonical("language_model.model.layers.3.mlp.up_proj.weight", "model.layers.3.mlp.up_proj.weight");
    hf_canonical("language_model.lm_head.weight", "lm_head.weight");
    hf_canonical("model.language_model.norm.weight", "model.norm.weight");
    hf_canonical("model.vision_tower.vision_model.post_layernorm.bias",
                 "vision_tower.vision_model.post_layernorm.bias");
    hf_canonical("model.multi_modal_projector.linear_1.weight", "multi_modal_projector.linear_1.weight");
    hf_canonical("multi_modal_projector.linear_2.bias", "multi_modal_projector.linear_2.bias");
    hf_canonical("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.weight");
    tu_assert(lv_names_hf_for_file("model.norm.weight", true, out, sizeof out) &&
                  strcmp(out, "language_model.model.norm.weight") == 0,
              "LLaVA files get the hub layout: %s", out);
    tu_assert(lv_names_hf_for_file("lm_head.weight", true, out, sizeof out) &&
                  strcmp(out, "language_model.lm_head.weight") == 0, "LLaVA lm_head: %s", out);
    bool is_k;
    tu_assert(lv_names_is_qk("model.layers.4.self_attn.k_proj.weight", &is_k) && is_k &&
                  lv_names_is_qk("model.layers.4.self_attn.q_proj.weight", &is_k) && !is_k &&
                  !lv_names_is_qk("model.layers.4.self_attn.v_proj.weight", &is_k),
              "q and k projections are recognised");

    /* rotary permutation: 2 heads of dim 6, rows of 3 floats tagged by their Meta row */
    enum { H = 2, HD = 6, COLS = 3 };
    float meta[H * HD][COLS], hf[H * HD][COLS], back[H * HD][COLS];
    for (int r = 0; r < H * HD; r++)
        for (int c = 0; c < COLS; c++)
            meta[r][c] = (float)(r * 10 + c);
    lv_qk_meta_to_hf(hf, meta, H, HD, sizeof meta[0]);
    /* head 1: HF rows 6,7,8 are Meta rows 6,8,10; HF rows 9,10,11 are Meta rows 7,9,11 */
    tu_assert(hf[6][0] == 60 && hf[7][0] == 80 && hf[8][0] == 100 && hf[9][0] == 70 &&
                  hf[10][0] == 90 && hf[11][2] == 112 && hf[1][1] == 21,
              "Meta -> HF: half i of head h takes Meta rows 2i and 2i+1");
    lv_qk_hf_to_meta(back, hf, H, HD, sizeof meta[0]);
    tu_assert(memcmp(back, meta, sizeof meta) == 0, "HF -> Meta inverts Meta -> HF exactly");
    return tu_finish();
}
