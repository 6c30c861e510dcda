/* dup-name.c: a plugin whose method is called "lora", like the built-in: refused. */
#include <lavinia/peft.h>

static int create(lv_peft_ctx *ctx)
{
    (void)ctx;
    return 0;
}

static lv_tensor *apply(const struct lv_peft_call *c)
{
    return c->y;
}

static const struct lv_peft_method lora_again = {
    .abi = LV_PEFT_ABI, .name = "lora", .sites = LV_SITE_LINEAR,
    .create = create, .apply = apply,
};

static const struct lv_peft_method *const methods[] = { &lora_again, NULL };

const struct lv_peft_method *const *lv_peft_plugin(void)
{
    return methods;
}
