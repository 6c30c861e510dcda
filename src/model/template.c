/*
 * template.c: the chat templates (template.h).
 *
 * The layouts, turn by turn (S: system, U: user text, A: answer):
 *   llava-v1  <s>[S ]USER: [<image>\n]U ASSISTANT: A</s>USER: U ASSISTANT:      (LLaVA conv v1)
 *   vicuna    <s>S USER: U ASSISTANT: A</s>USER: U ASSISTANT:                    (FastChat v1.1)
 *   llama-2   <s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU [/INST] A </s><s>[INST] U [/INST]
 *   mistral   <s>[INST] [S\n\n]U [/INST]A</s>[INST] U [/INST]
 *   chatml    [<|im_start|>system\nS<|im_end|>\n]<|im_start|>user\nU<|im_end|>\n
 *             <|im_start|>assistant\nA<|im_end|>\n...
 */
#ifdef HAVE_CONFIG_H
#include "config.h"
#endif

#include "model/template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/buf.h"

enum { K_LLAVA, K_VICUNA, K_LLAMA2, K_MISTRAL, K_CHATML };

static const struct lv_template template_table[] = {
    { .name = "llava-v1", .bos = "<s>", .kind = K_LLAVA },
    { .name = "vicuna", .bos = "<s>", .kind = K_VICUNA,
      .default_system = "A chat between a curious user and an artificial intelligence "
                        "assistant. The assistant gives helpful, detailed, and polite answers "
                        "to the user's questions." },
    { .name = "llama-2", .bos = "<s>", .kind = K_LLAMA2 },
    { .name = "mistral", .bos = "<s>", .kind = K_MISTRAL },
    { .name = "chatml", .bos = "", .kind = K_CHATML, .end_of_turn = "<|im_end|>" },
};
#define N_TEMPLATES (sizeof template_table / sizeof template_table[0])

const char *lv_template_names(void)
{
    return "llava-v1, vicuna, llama-2, mistral, chatml";
}

const struct lv_template *lv_template_find(const char *name)
{
    for (size_t i = 0; i < N_TEMPLATES; i++)
        if (strcmp(template_table[i].name, name) == 0)
            return &template_table[i];
    return NULL;
}

const struct lv_template *lv_template_detect(const char *jinja)
{
    if (!jinja || !*jinja)
        return NULL;
    if (strstr(jinja, "<|im_start|>"))
        return lv_template_find("chatml");
    if (strstr(jinja, "[INST]"))
        return lv_template_find(strstr(jinja, "<<SYS>>") ? "llama-2" : "mistral");
    if (strstr(jinja, "ASSISTANT:") || strstr(jinja, "'ASSISTANT'"))
        return lv_template_find(strstr(jinja, "<image>") ? "llava-v1" : "vicuna");
    return NULL;
}

char *lv_template_user_turn(const struct lv_template *t, const char *system, const char *text,
                            bool first, bool image)
{
    const char *sys = first ? (system ? system : t->default_system) : NULL;
    const char *img = image ? "<image>\n" : "";
    const char *bos = first ? t->bos : "";
    bool has_sys = sys && *sys;
    switch (t->kind) {
    case K_LLAVA:
    case K_VICUNA:
        return lv_strdupf("%s%s%sUSER: %s%s ASSISTANT:", bos, has_sys ? sys : "",
                          has_sys ? " " : "", img, text);
    case K_LLAMA2:
        if (has_sys)
            return lv_strdupf("<s>[INST] <<SYS>>\n%s\n<</SYS>>\n\n%s%s [/INST]", sys, img, text);
        return lv_strdupf("<s>[INST] %s%s [/INST]", img, text);
    case K_MISTRAL:
        return lv_strdupf("%s[INST] %s%s%s%s [/INST]", bos, has_sys ? sys : "",
                          has_sys ? "\n\n" : "", img, text);
    case K_CHATML:
        return lv_strdupf("%s%s%s<|im_start|>user\n%s%s<|im_end|>\n<|im_start|>assistant\n",
                          has_sys ? "<|im_start|>system\n" : "", has_sys ? sys : "",
                          has_sys ? "<|im_end|>\n" : "", img, text);
    }
    return NULL;
}

const char *lv_template_close_answer(const struct lv_template *t)
{
    switch (t->kind) {
    case K_LLAMA2: return " </s>";
    case K_CHATML: return "<|im_end|>\n";
    default: return "</s>";
    }
}
