#!/usr/bin/env python3
"""tokenizer_cases.py — golden fixtures for the C tokenizer (engine/tokenizer.c),
made with Hugging Face `tokenizers` on the real Pythia tokenizer.json.

    python3 ops/golden/tokenizer_cases.py [--tokenizer PATH] [--out DIR]
    python3 ops/golden/tokenizer_cases.py --unicode-report

Writes, under DIR (default tests/data/tokenizer):
  cases.jsonl          {"text", "ids", "decoded"}: HF encode(text).ids and
                       HF decode(ids, skip_special_tokens=False). Broad and
                       deterministic (fixed seeds): prose, code, whitespace runs,
                       scripts, emoji, NFD input, contractions, specials,
                       unusual whitespace, controls, random mixes.
  invalid_utf8.jsonl   {"hex", "ids", "n_replaced", "decoded"}: byte strings
                       with invalid UTF-8; ids = HF encode of
                       bytes.decode("utf-8", "replace"), n_replaced = number of
                       U+FFFD the decoder inserted.
  decode.jsonl         {"ids", "decoded"}: HF decode of id sequences that cut
                       UTF-8 characters, ids past the vocab, specials.
  unicode_blocks.jsonl {"first", "last", "nfc_fnv", "ids_fnv", "n_ids"}: for
                       each block of 1024 code points, the FNV-1a 64 of HF's
                       NFC of block_text() (UTF-8) and of HF's ids (int32 LE).
                       block_text() is rebuilt the same way by the C test, so
                       every code point is checked for NFC and pre-tokenizer
                       classes without storing the text.

--unicode-report rederives the Unicode-version patches the C code carries
(HF's Oniguruma classes vs Unicode 14 — which is both this Python's
unicodedata and PCRE2 10.42's — and HF's NFC vs utf8proc) and prints them.

Needs: pip `tokenizers` (0.23 used), the stdlib. Runs in about a minute.
"""
import argparse
import codecs
import ctypes
import ctypes.util
import glob
import inspect
import json
import os
import random
import sys
import unicodedata

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers

SPECIALS = ["<|endoftext|>", "<|padding|>"]
ODD_WS = ["\u00a0", "\u1680", "\u2000", "\u2001", "\u2002", "\u2003", "\u2004", "\u2005", "\u2006", "\u2007",
          "\u2008", "\u2009", "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\u0085", "\u180e",
          "\u200b", "\ufeff", "\u000b", "\u000c", "\r", "\x1c", "\x1d", "\x1e", "\x1f"]
EMOJI = ["\U0001F44D", "\U0001F44D\U0001F3FD", "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466",
         "\U0001F3F3\uFE0F\u200D\U0001F308", "\U0001F1FA\U0001F1F8", "\U0001F1EF\U0001F1F5", "1\uFE0F\u20E3",
         "\u2764\uFE0F", "\U0001F9D1\U0001F3FF\u200D\U0001F4BB", "\U0001F469\U0001F3FB\u200D\u2764\uFE0F\u200D"
         "\U0001F48B\u200D\U0001F468\U0001F3FC", "\U0001F600", "\U0001F602\U0001F602\U0001F602", "\u263A",
         "\U0001F9D9\u200D\u2640\uFE0F", "\U0001F44B\U0001F3FB", "\U0001F44B\U0001F3FF", "\U0001F408\u200D\u2B1B",
         "#\uFE0F\u20E3", "\U0001FAE0", "\U0001F60A", "\u2615", "\U0001F680"]
SCRIPTS = {
    "zh": "我们今天去公园散步，天气很好。机器学习模型需要大量的数据。",
    "ja": "日本語のテキストはひらがな、カタカナ、漢字を混ぜて書きます。東京タワーに行きました！",
    "ko": "안녕하세요, 만나서 반갑습니다. 한국어 문장은 띄어쓰기를 합니다.",
    "ar": "مرحبا بالعالم، هذه جملة باللغة العربية مع أرقام ١٢٣٤٥ وعلامات ترقيم؟",
    "he": "שלום עולם, זה משפט בעברית עם ניקוד: שָׁלוֹם.",
    "hi": "नमस्ते दुनिया। यह हिंदी में एक वाक्य है, जिसमें अंक १२३ भी हैं।",
    "th": "สวัสดีชาวโลก ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
    "ru": "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "el": "Καλημέρα κόσμε· η ελληνική γλώσσα έχει τόνους: άέήίόύώ ΐΰ.",
    "vi": "Tiếng Việt có rất nhiều dấu: ắ ằ ẳ ẵ ặ ố ồ ổ ỗ ộ ướ ườ.",
    "tr": "İstanbul'da ığdır şehri, Çok güzel ŞEHİR.",
    "am": "ሰላም ለዓለም፣ ይህ የአማርኛ ዓረፍተ ነገር ነው።",
    "ta": "வணக்கம் உலகம், இது தமிழ் வாக்கியம்.",
    "ka": "გამარჯობა მსოფლიო",
    "my": "မင်္ဂလာပါ ကမ္ဘာလောက",
}
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D", "'Ll",
                "'Re", "'x", "''", "'", "\u2019s", "\u2019ll"]
PUNCT = ["!!!", "...", "?!?", "---", "===", "$$$", "@#%", "()", "[]{}", "<<>>", "//", "\\\\", "~~~", "^_^", ":-)",
         "\u2026", "\u00bf\u00a1", "\u2014\u2013", "\u00ab\u00bb", "\u201c\u201d", "\u3001\u3002", "\uff01\uff1f"]
DIGITS = ["0", "7", "42", "123", "2024", "31415926535", "1,000,000", "3.14159", "1e-9", "0x1F", "\u0661\u0662\u0663",
          "\u0967\u0968", "\uff11\uff12", "\u00b2\u00b3", "\u2167\u216b", "\u00bd", "\u2460\u2461",
          "\U0001D7D8\U0001D7D9", "\u0e51\u0e52"]
# Code points Unicode 15.0-16.0 added to \p{L} / \p{N} (HF's Oniguruma knows
# them, PCRE2 10.42 does not), and ones HF's Unicode 9.0 NFC does not know.
NEW_L = ["\U0001E5D0", "\U0001E4D0", "\U00011F04", "\U00031350", "\U0002EBF0", "\u1c89", "\ua7cb", "\U000105C0",
         "\U00013460", "\U00016100", "\U00011380"]
NEW_N = ["\U0001E5F1", "\U0001E4F0", "\U00011F50", "\U0001CCF0", "\U00016130", "\U00010D40"]
NFC_INERT = ["\u07fd", "\u0898", "\u08ca", "\u08d3", "\u09fe", "\u0c3c", "\u0d3b", "\u0eba", "\u1715", "\u1abf",
             "\u1ac4", "\u1df6", "\ua82c", "\U00010D24", "\U00010F46", "\U00011070", "\U0001133B",
             "\U00011935\U00011930", "\U00011938", "\U0001E08F", "\U0001E130", "\U0001E4EC", "\U00016FF0"]
MARKS = ["\u0300", "\u0301", "\u0302", "\u0303", "\u0308", "\u030a", "\u0323", "\u0327", "\u0328", "\u0334",
         "\u0345", "\u031b", "\u0316", "\u05b0", "\u064b", "\u093c", "\u094d", "\u0e31", "\u3099", "\u309a",
         "\u20d7", "\u1dc0", "\ufe20"]


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def block_text(first, last):
    """Per code point c: NFC reordering and composition around c, and c next to
    letters, digits, spaces and punctuation (its pre-tokenizer class). The C
    test (tests/test_tokenizer.c, unicode_block_text) builds the same string."""
    parts = []
    for c in range(first, last + 1):
        if 0xD800 <= c <= 0xDFFF:
            continue
        ch = chr(c)
        parts.append("(\u0301" + ch + "\n(" + ch + "\u0334\n" + ch + "\u0301 a" + ch + "1" + ch + " " + ch + "!" +
                     ch + ch + "x\n")
    return "".join(parts)


class Gen:
    def __init__(self, tok, seed):
        self.tok = tok
        self.rng = random.Random(seed)
        self.texts = []
        self.seen = set()

    def add(self, t):
        if t not in self.seen:
            self.seen.add(t)
            self.texts.append(t)

    # ---- sources ----
    def prose(self, n):
        import pydoc_data.topics as topics
        paras = []
        for key in sorted(topics.topics):
            for p in topics.topics[key].split("\n\n"):
                p = p.strip("\n")
                if 40 <= len(p) <= 1200 and not p.startswith("   "):
                    paras.append(p)
        self.rng.shuffle(paras)
        for p in paras[:n]:
            self.add(p)
        # docstrings of stdlib modules and their members
        import collections
        import functools
        import itertools
        import json as js
        import textwrap
        docs = []
        for mod in [collections, functools, itertools, js, textwrap, os.path, random, inspect]:
            for name, obj in sorted(vars(mod).items()):
                d = getattr(obj, "__doc__", None) if not name.startswith("_") else None
                if isinstance(d, str) and 30 <= len(d) <= 1500:
                    docs.append(d)
        self.rng.shuffle(docs)
        for d in docs[: n // 2]:
            self.add(d)
        # two long ones (several kB) for long-input paths
        self.add("\n\n".join(paras[n:n + 12]))
        self.add(" ".join(paras[n + 12:n + 30]).replace("\n", " "))

    def code(self, n):
        root = os.path.dirname(os.__file__)
        files = sorted(glob.glob(os.path.join(root, "*.py")) + glob.glob(os.path.join(root, "json", "*.py")))
        self.rng.shuffle(files)
        for i in range(n):
            src = open(files[i % len(files)], encoding="utf-8", errors="replace").read().split("\n")
            a = self.rng.randrange(max(1, len(src) - 40))
            chunk = "\n".join(src[a:a + self.rng.randint(3, 40)])
            r = self.rng.random()
            if r < 0.25:   # tab indentation
                chunk = "\n".join(l.replace("    ", "\t") for l in chunk.split("\n"))
            elif r < 0.35:  # mixed tabs and spaces, trailing whitespace, CRLF
                chunk = "\n".join(l.replace("        ", "\t    ") + " " * self.rng.randint(0, 3)
                                  for l in chunk.split("\n")).replace("\n", "\r\n")
            self.add(chunk)
        self.add("def f(x):\n\tif x:\n\t\treturn [i  for i in  range(10)]\n\t\t\n\treturn {}\n")
        self.add("int main(void) {\n    for (int i = 0; i < n; i++) {\n        x[i] += 1;   // comment\n    }\n}\n")
        self.add("all:\n\t$(CC) -o $@ $^\n\n.PHONY: all\n")

    def whitespace(self):
        for k in range(1, 61):
            self.add(" " * k)
            self.add("a" + " " * k + "b")
            self.add("x" + " " * k)
            self.add(" " * k + "y")
        for k in list(range(1, 20)) + [32, 64, 100]:
            self.add("\n" * k)
            self.add("\t" * k)
            self.add("a" + "\n" * k + "b")
            self.add("a" + "\t" * k + "b")
        for _ in range(150):
            ws = "".join(self.rng.choice([" ", " ", " ", "\n", "\t", "\r", "\r\n", "\u00a0", "\u3000", "\u2009"])
                         for _ in range(self.rng.randint(1, 30)))
            self.add(self.rng.choice(["", "a", "word", "1", "!"]) + ws + self.rng.choice(["", "b", "Word", "2", "?"]))
        self.add(" " * 1000)
        self.add("a" + " " * 777 + "b")
        self.add("\n".join("    " * (i % 6) + "line" for i in range(40)))

    def scripts(self):
        for lang, s in SCRIPTS.items():
            self.add(s)
            self.add(unicodedata.normalize("NFD", s))
            self.add(" " + s + "  " + s[:10])
        for _ in range(60):   # random CJK / Hangul / kana runs
            lo, hi = self.rng.choice([(0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x3040, 0x30FF), (0x20000, 0x2A6DF)])
            self.add("".join(chr(self.rng.randint(lo, hi)) for _ in range(self.rng.randint(1, 40))))

    def emoji(self):
        for e in EMOJI:
            self.add(e)
            self.add("I like " + e + " a lot" + e + e)
        for _ in range(40):
            self.add(" ".join(self.rng.choice(EMOJI) for _ in range(self.rng.randint(1, 8))))

    def nfd(self):
        words = ["café", "naïve", "résumé", "Ångström", "façade", "jalapeño", "Đặng", "Nguyễn", "Ω", "ﬁ", "Å",
                 "한국어", "ǅ", "ḱṷṓn", "ﾃｽﾄ", "가각", "ｶﾞ"]
        for w in words:
            self.add(w)
            self.add(unicodedata.normalize("NFD", w))
            self.add(unicodedata.normalize("NFKD", w))
            self.add("The " + unicodedata.normalize("NFD", w) + "'s day")
        for _ in range(150):  # base + random marks in random order (canonical reordering)
            base = self.rng.choice("aeiouAEOnNcCsSzZ\u03b1\u0391\u0438\u0430 1<>=")
            s = base + "".join(self.rng.choice(MARKS) for _ in range(self.rng.randint(1, 6)))
            self.add(s)
            self.add("x" + s + "y " + s)
        for c in NFC_INERT:  # Unicode-version-sensitive NFC
            self.add(c)
            self.add("a" + c + "\u0301")
            self.add("(\u0301" + c + "\u0334" + c + "\u0316")
        for c in NEW_L + NEW_N:
            self.add("a" + c + "1" + c + " " + c + "!")
        self.add("\u1100\u1161\u11a8 \u1100\u1161")  # conjoining jamo
        self.add(">\u0338 =\u0338 <\u0338")

    def contractions(self):
        for c in CONTRACTIONS:
            for tmpl in ["I{c}", "he{c} here", "{c}", " {c}", "WE{c} GO", "x {c}s", "{c}{c}", "don{c}t"]:
                self.add(tmpl.format(c=c))
        self.add("I'm sure we'll see they'd've known it's John's AND IT'S JOHN'S")
        self.add("'s's's ''' 'll've 'ree")

    def numbers_punct(self):
        for d in DIGITS:
            self.add(d)
            self.add("x" + d + "y " + d + " " + d)
        for p in PUNCT:
            self.add(p)
            self.add("a" + p + " b " + p + p)
        for _ in range(60):
            self.add("".join(self.rng.choice("!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~ ") for _ in range(self.rng.randint(1, 30))))
            self.add("".join(self.rng.choice("0123456789 .,") for _ in range(self.rng.randint(1, 40))))
        self.add("1" * 500)
        self.add("a" * 700)
        self.add("!" * 300)
        self.add("ab" * 300)

    def specials(self):
        tmpls = ["{s}", "a{s}b", "a {s} b", "  {s}  ", "{s}{s}", "{s} {s}", "{s}\n{s}", "<{s}>", "<|{s}|>",
                 "x{s}\u0301", "{s}\u0338", "\u00e9{s}e\u0301", "{s}   x", "    {s}", "<|endoftext|<|padding|>",
                 "<|endoftext", "endoftext|>", "<| endoftext |>", "<|ENDOFTEXT|>", "{s}'s", "1{s}2"]
        for s in SPECIALS:
            for t in tmpls:
                self.add(t.format(s=s))
        self.add("<|padding|><|endoftext|><|padding|>")
        self.add("Once upon a time.<|endoftext|>The end.<|endoftext|>")

    def odd_whitespace_controls(self):
        for w in ODD_WS:
            for t in ["a{w}b", "{w}", "{w}{w}", " {w} ", "a {w}b", "a{w} b", "{w}x", "x{w}", "a{w}{w}  b", "1{w}2",
                      "!{w}!", "\n{w}\n"]:
                self.add(t.format(w=w))
        for c in list(range(0, 32)) + [0x7F] + list(range(0x80, 0xA0)):
            self.add("a" + chr(c) + "b")
            self.add(chr(c))
        self.add("\x00\x00 \x00")

    def singles(self):
        for c in range(32, 127):
            self.add(chr(c))
        self.add("")
        for c in ["\u00e9", "\u00ff", "\u0100", "\u0120", "\u0143", "\uffff", "\ufffd", "\U0010ffff", "\ue000",
                  "\U000e0001", "\u00ad", "\u034f"]:
            self.add(c)
            self.add("a" + c + "b")

    def random_mix(self, n):
        atoms = (list(SCRIPTS.values()) + EMOJI + CONTRACTIONS + PUNCT + DIGITS + ODD_WS + SPECIALS + MARKS +
                 NEW_L + NEW_N + NFC_INERT + [" ", "  ", "   ", "\n", "\t", "\n\n", "    ", "the", " the", "The",
                                              "hello", "world", "a", "I", "x", "_", "-", "ﬁ", "e\u0301"])
        for _ in range(n):
            k = self.rng.randint(1, 25)
            parts = []
            for _ in range(k):
                a = self.rng.choice(atoms)
                if len(a) > 12 and self.rng.random() < 0.7:
                    i = self.rng.randrange(len(a) - 4)
                    a = a[i:i + self.rng.randint(1, 8)]
                parts.append(a)
            self.add("".join(parts))
        for _ in range(n // 4):  # random code points from everywhere (no surrogates)
            s = []
            for _ in range(self.rng.randint(1, 20)):
                c = self.rng.choice([self.rng.randint(0, 0x7F), self.rng.randint(0x80, 0x7FF),
                                     self.rng.randint(0x800, 0xFFFF), self.rng.randint(0x10000, 0x10FFFF)])
                if not 0xD800 <= c <= 0xDFFF:
                    s.append(chr(c))
            self.add("".join(s))

    def rows(self):
        out = []
        for t in self.texts:
            ids = self.tok.encode(t).ids
            out.append({"text": t, "ids": ids, "decoded": self.tok.decode(ids, skip_special_tokens=False)})
        return out


def count_replacements(data):
    n = [0]

    def handler(exc):
        n[0] += 1
        return ("\ufffd", exc.end)

    codecs.register_error("count_fffd", handler)
    text = data.decode("utf-8", "count_fffd")
    assert text == data.decode("utf-8", "replace")
    return text, n[0]


def invalid_rows(tok, seed):
    rng = random.Random(seed)
    fixed = [b"\xff", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf0\x9f\x98",
             b"abc\xe2\x82", b"\xe2\x82\xac\xe2", b"\x80\x81\x82", b"a\xc3(b", b"\xf8\x88\x80\x80\x80",
             b"\xfe\xfe\xff\xff", b"\xc3\xa9\xc3", b"caf\xe9 au lait", b"\xef\xbf\xbd\xff", b"<|endoftext|>\xff",
             b"\xff<|endoftext|>\xfe", b"  \xa0  ", b"\xe0\xa0", b"\xf0\x90\x80", b"\xf1\x80\x80\xc0",
             b"hello\xc2 world", b"\xed\x9f\xbf\xed\xa0\x80", b"\xc1\xbf", b"\xf5\x80\x80\x80", b"e\xcc\x81\xcc",
             b"\xe2\x80\xa8\xe2\x80", b"\x00\xff\x00", b"I\xe2\x80\x99ll \x99", b"\xf0\x9f\x91\x8d\xf0\x9f\x8f"]
    rows = []
    datas = list(fixed)
    pieces = [b"a", b" ", b"the", b"\xc3\xa9", b"\xe6\x97\xa5", b"\xf0\x9f\x98\x80", b"<|endoftext|>", b"  ", b"1"]
    while len(datas) < 60:
        d = bytearray()
        for _ in range(rng.randint(1, 12)):
            r = rng.random()
            if r < 0.4:
                d += rng.choice(pieces)
            elif r < 0.7:
                d.append(rng.randint(0x80, 0xFF))
            else:
                p = rng.choice(pieces[3:6])
                d += p[: rng.randint(1, len(p) - 1)]
        datas.append(bytes(d))
    for d in datas:
        text, n = count_replacements(d)
        ids = tok.encode(text).ids
        rows.append({"hex": d.hex(), "ids": ids, "n_replaced": n,
                     "decoded": tok.decode(ids, skip_special_tokens=False)})
    return rows


def decode_rows(tok, seed):
    rng = random.Random(seed)
    vocab = tok.get_vocab()
    n = tok.get_vocab_size()
    rows = []
    byte_ids = sorted(i for t, i in vocab.items() if len(t) == 1)
    for _ in range(120):
        k = rng.randint(1, 12)
        ids = []
        for _ in range(k):
            r = rng.random()
            if r < 0.5:
                ids.append(rng.choice(byte_ids))
            elif r < 0.8:
                ids.append(rng.randrange(n))
            elif r < 0.9:
                ids.append(rng.choice([0, 1, 50254, 50276, 50275]))
            else:
                ids.append(rng.choice([n, n + 1, 50431, 60000, 2 ** 31 - 1]))
        rows.append({"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
    rows.append({"ids": [], "decoded": ""})
    return rows


def block_rows(tok):
    nfc = normalizers.NFC()
    rows = []
    for first in range(0, 0x110000, 1024):
        last = first + 1023
        text = block_text(first, last)
        if not text:
            continue
        ids = tok.encode(text).ids
        idb = b"".join(i.to_bytes(4, "little") for i in ids)
        rows.append({"first": first, "last": last, "nfc_fnv": "%016x" % fnv1a64(nfc.normalize_str(text).encode()),
                     "ids_fnv": "%016x" % fnv1a64(idb), "n_ids": len(ids)})
    return rows


SMALL_TEXTS = ["hello world", "abc", "cabc abab", "a  b", "a   b", "a    b", "<|endoftext|>hello", "xyzabq",
               "zzq!!qa", "", " ", "\n\n", "caf\u00e9 cafe\u0301", "he's 12 121212", "hello<|endoftext|> world",
               "hellohello  world", "aaaa", "xyz xyzxyz", "x y z", "\u00e9\u00e9", "llll", "\U0001F600 ab"]


def small_rows(dirpath):
    """The hand-written tokenizers that tests use without the real file."""
    rows = []
    for name in ["small.json", "small_unk.json"]:
        t = Tokenizer.from_file(os.path.join(dirpath, name))
        for text in SMALL_TEXTS:
            ids = t.encode(text).ids
            rows.append({"tokenizer": name, "text": text, "ids": ids,
                         "decoded": t.decode(ids, skip_special_tokens=False)})
    return rows


def bad_files(dirpath):
    """Malformed variants of small.json under bad/ (expected statuses are in
    tests/test_tokenizer.c); prints whether HF accepts each."""
    base = json.load(open(os.path.join(dirpath, "small.json"), encoding="utf-8"))
    raw = open(os.path.join(dirpath, "small.json"), "rb").read()

    def mut(fn):
        d = json.loads(json.dumps(base))
        fn(d)
        return json.dumps(d, ensure_ascii=False, indent=1).encode()

    def setp(path, value):
        def f(d):
            o = d
            for k in path[:-1]:
                o = o[k]
            if value is KeyError:
                del o[path[-1]]
            else:
                o[path[-1]] = value
        return f

    added = base["added_tokens"]
    files = {
        "truncated.json": raw[: len(raw) // 2],
        "empty.json": b"",
        "not_object.json": b"[1, 2, 3]\n",
        "bad_utf8.json": raw.replace(b"\"hello\"", b"\"hel\xfflo\""),
        "dup_key.json": raw.replace(b"\"a\": 1,", b"\"a\": 1, \"a\": 2,"),
        "no_model.json": mut(setp(["model"], KeyError)),
        "model_array.json": mut(setp(["model"], [])),
        "model_type_wordpiece.json": mut(setp(["model", "type"], "WordPiece")),
        "model_type_number.json": mut(setp(["model", "type"], 3)),
        "no_vocab.json": mut(setp(["model", "vocab"], KeyError)),
        "no_merges.json": mut(setp(["model", "merges"], KeyError)),
        "vocab_array.json": mut(setp(["model", "vocab"], ["a", "b"])),
        "vocab_empty.json": mut(lambda d: (d["model"].update(vocab={}, merges=[]), d.update(added_tokens=[]))),
        "vocab_string_id.json": mut(setp(["model", "vocab", "a"], "1")),
        "vocab_negative_id.json": mut(setp(["model", "vocab", "a"], -1)),
        "vocab_float_id.json": mut(setp(["model", "vocab", "a"], 1.5)),
        "vocab_dup_id.json": mut(setp(["model", "vocab", "b"], 1)),
        "vocab_huge_id.json": mut(setp(["model", "vocab", "b"], 100000000)),
        "merges_not_array.json": mut(setp(["model", "merges"], {"l": "l"})),
        "merges_unknown_symbol.json": mut(setp(["model", "merges", 1], "h q")),
        "merges_unknown_result.json": mut(setp(["model", "merges", 0], "l o")),
        "merges_three_parts.json": mut(setp(["model", "merges", 0], "l l l")),
        "merges_no_space.json": mut(setp(["model", "merges", 0], "ll")),
        "merges_mixed.json": mut(setp(["model", "merges", 1], ["h", "e"])),
        "merges_number.json": mut(setp(["model", "merges", 0], 7)),
        "normalizer_nfkc.json": mut(setp(["normalizer"], {"type": "NFKC"})),
        "normalizer_seq_lowercase.json": mut(setp(["normalizer"], {"type": "Sequence", "normalizers": [
            {"type": "NFC"}, {"type": "Lowercase"}]})),
        "normalizer_no_type.json": mut(setp(["normalizer"], {"kind": "NFC"})),
        "pretok_whitespace.json": mut(setp(["pre_tokenizer"], {"type": "Whitespace"})),
        "pretok_prefix_space.json": mut(setp(["pre_tokenizer", "add_prefix_space"], True)),
        "pretok_no_regex.json": mut(setp(["pre_tokenizer", "use_regex"], False)),
        "pretok_null.json": mut(setp(["pre_tokenizer"], None)),
        "pretok_flag_type.json": mut(setp(["pre_tokenizer", "add_prefix_space"], "no")),
        "decoder_wordpiece.json": mut(setp(["decoder"], {"type": "WordPiece", "prefix": "##", "cleanup": True})),
        "postproc_template.json": mut(setp(["post_processor"], {"type": "TemplateProcessing", "single": [],
                                                                "pair": [], "special_tokens": {}})),
        "added_lstrip.json": mut(setp(["added_tokens", 1, "lstrip"], True)),
        "added_missing_flag.json": mut(lambda d: d["added_tokens"][0].pop("normalized")),
        "added_wrong_id.json": mut(setp(["added_tokens", 1, "id"], 40)),
        "added_dup.json": mut(lambda d: d["added_tokens"].append(dict(added[1], id=34))),
        "added_not_array.json": mut(setp(["added_tokens"], {"x": 1})),
        "added_content_number.json": mut(setp(["added_tokens", 0, "content"], 5)),
        "version_2.json": mut(setp(["version"], "2.0")),
        "truncation_set.json": mut(setp(["truncation"], {"max_length": 4, "strategy": "LongestFirst",
                                                         "stride": 0, "direction": "Right"})),
        "dropout.json": mut(setp(["model", "dropout"], 0.1)),
        "byte_fallback.json": mut(setp(["model", "byte_fallback"], True)),
        "unk_missing.json": mut(setp(["model", "unk_token"], "<unk>")),
        "suffix.json": mut(setp(["model", "end_of_word_suffix"], "</w>")),
    }
    os.makedirs(os.path.join(dirpath, "bad"), exist_ok=True)
    for name, data in sorted(files.items()):
        with open(os.path.join(dirpath, "bad", name), "wb") as f:
            f.write(data)
        try:
            Tokenizer.from_str(data.decode("utf-8"))
            verdict = "HF accepts"
        except Exception as e:  # noqa: BLE001 - any HF refusal
            verdict = "HF rejects: " + str(e)[:70]
        print("  bad/%-32s %s" % (name, verdict))


def unicode_report():
    """Prints the patches engine/tokenizer.c and engine/utf8.c carry."""
    cps = [c for c in range(1, 0x110000) if not 0xD800 <= c <= 0xDFFF]
    s = "".join(map(chr, cps))

    def ranges(xs):
        r = []
        for x in sorted(xs):
            if r and r[-1][1] == x - 1:
                r[-1][1] = x
            else:
                r.append([x, x])
        return " ".join("%X" % a if a == b else "%X-%X" % (a, b) for a, b in r)

    hf = {}
    for name, pat in [("L", r"\p{L}+"), ("N", r"\p{N}+"), ("S", r"\s+")]:
        non = bytearray(len(s))
        for _, (a, b) in pre_tokenizers.Split(Regex(pat), "removed").pre_tokenize_str(s):
            non[a:b] = b"\1" * (b - a)
        hf[name] = {cps[i] for i in range(len(s)) if not non[i]}
    print("unicodedata", unicodedata.unidata_version)
    for name in "LN":
        py = {c for c in cps if unicodedata.category(chr(c))[0] == name}
        print("HF %s beyond unicodedata: %s" % (name, ranges(hf[name] - py)))
        print("unicodedata %s not in HF: %s" % (name, ranges(py - hf[name])))
    print("HF \\s:", ranges(hf["S"]))
    lib = ctypes.util.find_library("utf8proc")
    if not lib:
        print("no libutf8proc: NFC part skipped")
        return
    up = ctypes.CDLL(lib)
    up.utf8proc_NFC.restype = ctypes.c_void_p
    up.utf8proc_NFC.argtypes = [ctypes.c_char_p]
    up.utf8proc_unicode_version.restype = ctypes.c_char_p
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]

    def cnfc(t):
        p = up.utf8proc_NFC(t.encode())
        r = ctypes.string_at(p).decode()
        libc.free(p)
        return r

    hfn = normalizers.NFC()
    bad = set()
    for c in cps:
        if c < 0x300:  # all assigned long before Unicode 9.0
            continue
        ch = chr(c)
        if any(hfn.normalize_str(t) != cnfc(t) for t in ["(\u0301" + ch, "(" + ch + "\u0334", ch, ch + "\u0301"]):
            bad.add(c)
        d = unicodedata.normalize("NFD", ch)
        if d != ch and hfn.normalize_str(d) != cnfc(d):
            # a composition HF does not know (e.g. 11935 + 11930 -> 11938): its parts
            bad.update(ord(x) for x in d if ord(x) >= 0x300)
    print("utf8proc", up.utf8proc_unicode_version().decode(), "NFC differs from HF on:", ranges(bad))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", default=os.environ.get("KV_TOKENIZER", "../shared/data/pythia-tokenizer.json"))
    ap.add_argument("--out", default="tests/data/tokenizer")
    ap.add_argument("--unicode-report", action="store_true")
    a = ap.parse_args()
    if a.unicode_report:
        unicode_report()
        return
    tok = Tokenizer.from_file(a.tokenizer)
    g = Gen(tok, 20240501)
    g.prose(260)
    g.code(220)
    g.whitespace()
    g.scripts()
    g.emoji()
    g.nfd()
    g.contractions()
    g.numbers_punct()
    g.specials()
    g.odd_whitespace_controls()
    g.singles()
    g.random_mix(500)
    os.makedirs(a.out, exist_ok=True)

    def write(name, rows):
        path = os.path.join(a.out, name)
        with open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print("%s: %d rows, %d bytes" % (path, len(rows), os.path.getsize(path)))

    write("cases.jsonl", g.rows())
    write("invalid_utf8.jsonl", invalid_rows(tok, 7))
    write("decode.jsonl", decode_rows(tok, 11))
    write("small_cases.jsonl", small_rows(a.out))
    bad_files(a.out)
    write("unicode_blocks.jsonl", block_rows(tok))


if __name__ == "__main__":
    sys.exit(main())
