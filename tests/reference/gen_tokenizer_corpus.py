#!/usr/bin/python3
"""gen_tokenizer_corpus.py: tokenizer test corpus and SentencePiece reference ids for lavinia.

Run with Debian's interpreter (python3-sentencepiece 0.1.97), from anywhere:

    /usr/bin/python3 tests/reference/gen_tokenizer_corpus.py

It needs ../shared/conformance (beside the repository root) and writes, next to itself:

  tokenizer-corpus.jsonl               one test string per line, as a JSON string (ASCII-escaped)
  tokenizer-corpus.spm.ids             SentencePiece ids of each line on llama-tokenizer.model,
                                       space-separated (no BOS/EOS; empty line for no ids)
  tokenizer-corpus.spm.decoded.jsonl   SentencePiece's decode of those ids, as a JSON string

The corpus starts with the 46 cases of ggml-vocab-llama-spm.gguf.inp, then adds strings made
from a fixed seed (random.Random(1234)), so rerunning gives byte-identical files. Before writing,
it checks that SentencePiece reproduces ggml-vocab-llama-spm.gguf.out for those 46 cases.
"""
import json
import os
import random
import sys

import sentencepiece as spm

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))              # repo root = parent of tests/
CONF = os.path.join(TOP, "..", "shared", "conformance")

ENGLISH = [
    "Hello world", "The quick brown fox jumps over the lazy dog.",
    "It's a truth universally acknowledged, isn't it?", "Don't stop--keep going!",
    "She said: \"I'll be there at 5 o'clock.\"", "Mr. Smith paid $3.50 for 2 apples (on sale).",
    "e-mail me at someone@example.com or visit https://example.org/a?b=c&d=e#f",
    "Once upon a time, there was a little girl named Lily.",
    "UPPER lower MiXeD CaSe", "A B C D E F G", "tokenization; normalization: byte-fallback!",
    "What's 2+2? It's 4.", "well...   okay", "#hashtag @mention ~tilde ^caret |pipe|",
    "I can't believe it's not butter.", "The year 1984 and the year 2001.",
    "antidisestablishmentarianism", "supercalifragilisticexpialidocious",
    "newline at the end\n", "  leading and trailing spaces  ",
]

SCRIPTS = [
    # Cyrillic, Greek, Arabic, Hebrew, Devanagari
    "Привет, мир!", "нещо на Български", "Съешь же ещё этих мягких французских булок.",
    "Γειά σου Κόσμε", "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "مرحبا بالعالم", "اللغة العربية جميلة جدا",
    "שלום עולם", "עברית נכתבת מימין לשמאל",
    "नमस्ते दुनिया", "हिन्दी भाषा क्षत्रिय",
    # Thai, Khmer (no spaces between words)
    "สวัสดีชาวโลก", "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "សួស្តី​ពិភពលោក", "កាន់តែពិសេសអាចខលចេញ",
    # Chinese, Japanese kana+kanji, Korean Hangul
    "你好，世界！", "我们在北京吃烤鸭。", "繁體中文測試",
    "こんにちは世界", "カタカナとひらがなと漢字を混ぜる。", "東京都渋谷区",
    "안녕하세요 세계", "한국어 형태소 분석기",
    # Latin with diacritics, Vietnamese, other marks
    "Führer Straße Ærøskøbing", "Cửa Việt", "naïve café résumé", "Ωmega ≠ ∞ ≤ ∑ √",
]

EMOJI = [
    "😀", "🦙", "🚀", "👍🏽", "👨‍👩‍👧", "👩‍💻", "🏳️‍🌈", "😶‍🌫️", "🇫🇷", "🇯🇵🇺🇸", "1️⃣", "❤️",
    "\U0001D11E", "\U0001F600\U0001F601\U0001F602", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𠜎𠜱𠝹", "\U0010FFFD", "\U000E0041",
]

ODD_SPACES = ["\u00a0", "\u2009", "\u3000", "\u200b", "\u200d", "\ufeff", "\u2028", "\u2029",
              "\u2581", "\ufffd", "\u0085", "\u00ad"]

CODE = [
    'int main(void) { printf("%d\\n", x[i]); return 0; }',
    "#include <stdio.h>\n\nstatic int f(int *p) {\n\treturn p ? *p : -1;\n}\n",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}\n",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(f\"{i!r}\")",
    '{"name": "lavinia", "ids": [1, 2, 3], "nested": {"ok": true, "s": "a\\"b\\\\c"}}',
    "[{\"k\":null},{\"k\":-1.5e-10}]",
    "echo \"$HOME\" | sed -e 's/a\\/b/c/g' && ls -la ~/'my dir' > /dev/null 2>&1",
    "grep -E '^(foo|bar)[0-9]{2,}$' file.txt; x=$((1+2)); arr=(a b \"c d\")",
    "if (a && b || !c) { x <<= 2; y >>= 1; z = a ? b : c; }",
    "/* comment */ // another\nconst char *s = \"tab\\there\";",
    "<html><body><p class=\"x\">Hi &amp; bye</p></body></html>",
    "SELECT * FROM t WHERE a = 'x' AND b <> 3;",
    "C:\\Program Files\\lavinia\\bin\\",
]

SPECIAL = ["<s>", "</s>", "<unk>", "<image>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>",
           "<pad>", "<0x0A>", "<0xFF>", "<|endoftext|>", "<|im_start|>", "<mask>", "▁"]

WORDS = "the a of and to in is you that it he was for on are as with his they I at be this".split()


def controls():
    """Every ASCII control except NUL, plus DEL."""
    return [chr(c) for c in range(1, 32)] + ["\x7f"]


def zalgo(rng, base):
    return "".join(ch + "".join(chr(rng.randint(0x300, 0x36F)) for _ in range(rng.randint(1, 8)))
                   for ch in base)


def number(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 60)))
    if kind == 1:
        return "%d.%0*d" % (rng.randint(0, 10**6), rng.randint(1, 8), rng.randint(0, 10**8))
    if kind == 2:
        return "-%de%+d" % (rng.randint(1, 999), rng.randint(-30, 30))
    if kind == 3:
        return "{:,}".format(rng.randint(1000, 10**12))
    if kind == 4:
        return rng.choice("3579") * rng.randint(1, 12)
    return "0x%X" % rng.getrandbits(rng.choice([8, 16, 32, 64]))


def piece(rng):
    """One random fragment from any pool."""
    pool = rng.choice([ENGLISH, SCRIPTS, EMOJI, ODD_SPACES, CODE, SPECIAL, WORDS, controls()])
    r = rng.random()
    if r < 0.1:
        return number(rng)
    if r < 0.15:
        return zalgo(rng, rng.choice(WORDS))
    if r < 0.25:
        return " " * rng.randint(1, 20)
    if r < 0.32:
        return rng.choice(["\n", "\n\n\n", "\r\n", "\t", "\t\t", " \n ", "\n\t"])
    return rng.choice(pool)


def generated(rng):
    yield ""
    yield " "
    yield from ENGLISH
    yield from SCRIPTS
    yield from EMOJI
    for s in ODD_SPACES:
        yield s
        yield "a" + s + "b"
    yield from CODE
    for s in SPECIAL:
        yield s
        yield "x" + s + "y"
        yield " " + s + " hi"
    yield "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi! [/INST] Hello.</s>"
    yield "A <image> B <unk> C </s><s>"
    for c in controls():
        yield c
        yield "a" + c + "b"
        yield " " + c + "word"
    yield "".join(controls())
    yield from ["e\u0301", "n\u0303o", "a\u0308\u0304", "\u0301", "\u0301\u0301\u0301", "Z\u0351\u0364\u036b"]
    for _ in range(30):
        yield zalgo(rng, rng.choice(ENGLISH + WORDS)[:12])
    for n in range(1, 21):                                     # space runs at start/middle/end
        w, v = rng.choice(WORDS), rng.choice(WORDS)
        yield " " * n + w
        yield w + " " * n + v
        yield w + " " * n
        yield " " * n
    for s in ["\t", "\n", "\n\n\n", "\r\n", "\r", "\t\n", " \t ", "\n \n", "\r\n\r\n", "\t\t\tx"]:
        yield s
        yield "line one" + s + "line two"
        yield s + "start"
        yield "end" + s
    for _ in range(60):
        yield number(rng)
    yield from ["3333", "333 3333 33333", "1.5", "3.14159265358979", "-0.0", "1,000,000", "1 000 000"]
    for _ in range(25):                                        # very long lines
        n = rng.randint(500, 3000)
        s = ""
        while len(s) < n:
            s += piece(rng) if rng.random() < 0.3 else rng.choice(WORDS) + " "
        yield s
    yield "a" * 600
    yield " " * 700
    yield "🦙" * 300
    yield "漢字" * 400
    yield "\n" * 520
    yield "3" * 1000
    while True:                                                # random mixes, forever
        yield "".join(piece(rng) for _ in range(rng.randint(1, 12)))


def check(s):
    assert all(0 < ord(c) < 0x110000 and not 0xD800 <= ord(c) <= 0xDFFF for c in s), repr(s)
    s.encode("utf-8")


def main():
    sp = spm.SentencePieceProcessor(model_file=os.path.join(CONF, "llama-tokenizer.model"))

    with open(os.path.join(CONF, "ggml-vocab-llama-spm.gguf.inp"), "rb") as f:
        cases = f.read().decode("utf-8").split("\n__ggml_vocab_test__\n")
    assert cases[-1] == "", "expected an empty fragment after the last separator"
    cases = cases[:-1]
    with open(os.path.join(CONF, "ggml-vocab-llama-spm.gguf.out"), "rb") as f:
        expected = [[int(t) for t in line.split()] for line in f.read().decode("utf-8").split("\n")]
    expected = expected[:len(cases)]
    good = sum(sp.encode(c, out_type=int) == e for c, e in zip(cases, expected))
    print("gguf .out check: %d/%d cases match SentencePiece" % (good, len(cases)))
    if good != len(cases) or len(expected) != len(cases):
        sys.exit("SentencePiece does not reproduce ggml-vocab-llama-spm.gguf.out")

    corpus, seen = list(cases), set(cases)
    for s in generated(random.Random(1234)):
        if len(corpus) >= 1300:
            break
        if s not in seen:
            check(s)
            corpus.append(s)
            seen.add(s)

    ids = [sp.encode(s, out_type=int) for s in corpus]
    decoded = [sp.decode(i) for i in ids]

    def write(name, lines):
        with open(os.path.join(HERE, name), "w", encoding="utf-8", newline="\n") as f:
            f.writelines(line + "\n" for line in lines)

    write("tokenizer-corpus.jsonl", (json.dumps(s, ensure_ascii=True) for s in corpus))
    write("tokenizer-corpus.spm.ids", (" ".join(map(str, i)) for i in ids))
    write("tokenizer-corpus.spm.decoded.jsonl", (json.dumps(d, ensure_ascii=True) for d in decoded))
    same = sum(d == s for d, s in zip(decoded, corpus))
    print("corpus: %d strings; sp.decode(sp.encode(s)) == s for %d of them" % (len(corpus), same))


if __name__ == "__main__":
    main()
