/* bad-abi.c: a plugin built against a future PEFT ABI: refused, naming both numbers. */
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

static const struct lv_peft_method future = {
    .abi = LV_PEFT_ABI + 1, .name = "future", .sites = LV_SITE_LINEAR,
    .create = create, .apply = apply,
};

static const struct lv_peft_method *const methods[] = { &future, NULL };

const struct lv_peft_method *const *lv_peft_plugin(void)
{
    return methods;
}
