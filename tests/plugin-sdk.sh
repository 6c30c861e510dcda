#!/bin/bash
# plugin-sdk.sh: a PEFT plugin written outside the source tree, as its author would: lavinia
# installed into a temporary root (make install DESTDIR=...), the example plugin
# (plugins/example/bias-tuning.c, the same text as lavinia-plugins(7)) built from another
# directory with `pkg-config --cflags --libs lavinia` alone, loaded by the installed lavinia
# with --plugin-path, and its gradient check run. Plugins that must be refused (wrong ABI, no
# entry point, a duplicate name) are refused with one line each and the run goes on.
set -u
build="${LV_TOP_BUILDDIR:-.}"
src="${LV_TOP_SRCDIR:-.}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lv-sdk-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
. "$src/tests/testlib.sh"

if ! command -v pkg-config > /dev/null || ! command -v cc > /dev/null; then
    echo "skipped: pkg-config or cc missing"
    exit 77
fi
root="$tmp/root"
if ! make -s -C "$build" install DESTDIR="$root" > "$tmp/install.log" 2>&1; then
    bad "make install DESTDIR: $(tail -5 "$tmp/install.log")"
    exit 1
fi
prefix=$(sed -n 's/^prefix=//p' "$build/lavinia.pc")
pcdir=$(find "$root" -name lavinia.pc -printf '%h\n' | head -1)
libdir=$(dirname "$(find "$root" -name 'liblavinia.so' | head -1)")
lavinia="$root$prefix/bin/lavinia"
[ -f "$root$prefix/include/lavinia/peft.h" ] && [ -n "$pcdir" ] && [ -x "$lavinia" ] &&
    [ -f "$root$prefix/lib/lavinia/plugins/vera.so" ] &&
    ok "installed: lavinia, liblavinia, <lavinia/peft.h>, lavinia.pc, the plugins" ||
    bad "installed files missing under $root$prefix"
# the man page's example is the example file
awk '/^\.EX/ && !n++ { on = 1; next } /^\.EE/ && on { exit } on' "$src/man/lavinia-plugins.7" |
    sed 's/\\e/\\/g' > "$tmp/from-man.c"
cmp -s "$tmp/from-man.c" "$src/plugins/example/bias-tuning.c" &&
    ok "lavinia-plugins(7) shows plugins/example/bias-tuning.c verbatim" ||
    bad "the man page's example differs from plugins/example/bias-tuning.c"

mkdir "$tmp/myplugin" "$tmp/plugins"
cp "$src/plugins/example/bias-tuning.c" "$tmp/myplugin/"
flags=$(PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_SYSROOT_DIR="$root" pkg-config --cflags --libs lavinia)
if (cd "$tmp/myplugin" && cc -shared -fPIC -Wall -Wextra -Werror bias-tuning.c $flags \
        -o "$tmp/plugins/bias_tuning.so") 2> "$tmp/e"; then
    ok "built out of tree with pkg-config alone: $flags"
else
    bad "building the plugin: $(cat "$tmp/e")"
fi
export LD_LIBRARY_PATH="$libdir"
"$lavinia" --plugin-path "$tmp/plugins" adapters --gradcheck bias_tuning \
    --config '{"target_modules": "all-linear", "init_std": 0.1}' > "$tmp/o" 2> "$tmp/e"
rc=$?
[ $rc = 0 ] && grep -q "^gradcheck bias_tuning: .* values of 14 trainable tensors" "$tmp/o" &&
    ok "the installed lavinia loads it and its gradient check passes: $(cat "$tmp/o")" ||
    bad "gradcheck: status $rc: $(cat "$tmp/o" "$tmp/e")"
# the installed plugin directory lies under the temporary root: named here
"$lavinia" --plugin-path "$tmp/plugins" --plugin-path "$root$prefix/lib/lavinia/plugins" \
    adapters --methods > "$tmp/o" 2> "$tmp/e"
grep -q "^bias_tuning: " "$tmp/o" && grep -q "^vera: " "$tmp/o" && grep -q "^prompt_tuning: " "$tmp/o" &&
    ok "adapters --methods lists the plugin and the installed VeRA and prompt tuning" ||
    bad "methods: $(grep -v '^ ' "$tmp/o") $(cat "$tmp/e")"

# the shipped plugins, installed: their gradient checks
for check in 'vera {"target_modules": ["q_proj", "v_proj", "o_proj", "down_proj"], "r": 8}' \
    'prompt_tuning {"num_virtual_tokens": 3}'; do
    "$lavinia" --plugin-path "$root$prefix/lib/lavinia/plugins" adapters --gradcheck \
        "${check%% *}" --config "${check#* }" > "$tmp/o" 2> "$tmp/e" &&
        ok "installed ${check%% *}: $(cat "$tmp/o")" ||
        bad "installed ${check%% *}: $(cat "$tmp/o" "$tmp/e")"
done

# refusals: one line each, naming the file (and both ABI numbers), and the run goes on
cp "$build"/tests/plugins/.libs/{bad-abi,no-entry,dup-name}.so "$tmp/plugins/"
"$lavinia" --plugin-path "$tmp/plugins" adapters --gradcheck bias_tuning > "$tmp/o" 2> "$tmp/e"
rc=$?
grep -q "plugin .*bad-abi.so: PEFT ABI 2, lavinia has ABI 1" "$tmp/e" &&
    ok "wrong ABI refused: $(grep bad-abi "$tmp/e")" || bad "wrong ABI: $(cat "$tmp/e")"
grep -q "plugin .*no-entry.so: no lv_peft_plugin symbol" "$tmp/e" &&
    ok "no entry point refused: $(grep no-entry "$tmp/e")" || bad "no entry: $(cat "$tmp/e")"
grep -q "plugin .*dup-name.so: a method named 'lora' is already registered" "$tmp/e" &&
    ok "duplicate name refused: $(grep dup-name "$tmp/e")" || bad "duplicate: $(cat "$tmp/e")"
[ "$(wc -l < "$tmp/e")" = 3 ] && [ $rc = 0 ] &&
    ok "three refusals, three lines, and the run goes on with the good plugin" ||
    bad "refusals: status $rc: $(cat "$tmp/e")"
# a config value out of range: that adapter is skipped, the others run
"$lavinia" --plugin-path "$tmp/plugins" adapters --gradcheck bias_tuning \
    --config '{"init_std": 99}' > "$tmp/o" 2> "$tmp/e"
grep -q "'init_std' = 99 is outside 0..10" "$tmp/e" && ok "a config value out of range: $(tail -1 "$tmp/e")" ||
    bad "out of range: $(cat "$tmp/e")"
# the current directory is not searched unless named
(cd "$tmp/plugins" && env -u LAVINIA_PLUGIN_PATH XDG_DATA_HOME="$tmp/none" "$lavinia" adapters \
    --methods) > "$tmp/o" 2> "$tmp/e"
! grep -q "^bias_tuning" "$tmp/o" && ok "plugins in the current directory are not loaded" ||
    bad "the current directory was searched"
LAVINIA_PLUGIN_PATH="$tmp/plugins" "$lavinia" adapters --methods 2> /dev/null |
    grep -q "^bias_tuning: " && ok "\$LAVINIA_PLUGIN_PATH" || bad "\$LAVINIA_PLUGIN_PATH"
mkdir -p "$tmp/xdg/lavinia/plugins"
cp "$tmp/plugins/bias_tuning.so" "$tmp/xdg/lavinia/plugins/"
XDG_DATA_HOME="$tmp/xdg" "$lavinia" adapters --methods 2> /dev/null | grep -q "^bias_tuning: " &&
    ok "\$XDG_DATA_HOME/lavinia/plugins" || bad "\$XDG_DATA_HOME/lavinia/plugins"
exit $fail
