/*
 * template.h (internal): chat templates written in C.
 *
 * A conversation is rendered one turn at a time, so a chat keeps its kv cache across turns:
 * lv_template_user_turn gives the text that opens the first (or a later) user turn and ends
 * with the assistant's cue; lv_template_close_answer gives what follows a generated answer
 * (the end-of-turn marker) before the next user turn. Control tokens are written as text
 * ("<s>", "[INST]", "<|im_start|>") and encoded with special tokens parsed.
 *
 * Known: llava-v1 ("USER: <image>\n... ASSISTANT:"), vicuna (v1.1), llama-2 (chat),
 * mistral (instruct), chatml. lv_template_detect recognises a checkpoint's Jinja template
 * (tokenizer_config.json, chat_template.json, GGUF tokenizer.chat_template) by the markers
 * each one writes, as llama.cpp does.
 */
#ifndef LV_MODEL_TEMPLATE_H
#define LV_MODEL_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

struct lv_template {
    const char *name;
    const char *bos;              /* written at the start of the conversation ("<s>", "") */
    const char *default_system;   /* NULL: none unless given */
    const char *end_of_turn;      /* a piece that ends the assistant's turn besides EOS, or
                                     NULL ("<|im_end|>") */
    int kind;                     /* private: the rendering rules */
};

/* The names, for messages: "llava-v1, vicuna, llama-2, mistral, chatml" */
const char *lv_template_names(void);
const struct lv_template *lv_template_find(const char *name);
/* The template a Jinja text is, or NULL. */
const struct lv_template *lv_template_detect(const char *jinja);

/* The text of a user turn, ending with the assistant's cue. first: the conversation starts
 * here (BOS and system prompt); system NULL: the template's default; image: the turn carries
 * an image (written as "<image>\n" before the text, LLaVA's placeholder). A malloc'd string. */
char *lv_template_user_turn(const struct lv_template *t, const char *system, const char *text,
                            bool first, bool image);
/* What closes an assistant's answer that stopped at EOS or the end-of-turn piece (a static
 * string: "</s>", "<|im_end|>\n", ...). */
const char *lv_template_close_answer(const struct lv_template *t);

#endif /* LV_MODEL_TEMPLATE_H */
