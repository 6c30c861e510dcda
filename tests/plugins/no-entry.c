/* no-entry.c: a shared object without lv_peft_plugin: refused as not a lavinia plugin. */
int lv_not_a_plugin(void);

int lv_not_a_plugin(void)
{
    return 42;
}
