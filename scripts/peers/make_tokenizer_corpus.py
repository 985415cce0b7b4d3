"""Writes Tests/MaaSTextTests/Fixtures/tokenizer_corpus.json: texts and the ids HF `tokenizers` gives them.

The corpus is deterministic (seeded, no downloads) and aims at the places a BERT WordPiece port goes
wrong: accents and combining marks, CJK vs kana/hangul, emoji sequences, punctuation runs, words
around max_input_chars_per_word, control and zero-width characters, literal special tokens, other
scripts and random code points from many blocks. Tests/interop/test_tokenizer.py re-runs
`build_corpus` against the installed `tokenizers` and checks the committed file still matches.

Run with the export venv: /work/main/.venv-export/bin/python scripts/peers/make_tokenizer_corpus.py
"""
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "Tests" / "MaaSTextTests" / "Fixtures"
TOKENIZER = FIXTURES / "minilm_tokenizer.json"
OUT = FIXTURES / "tokenizer_corpus.json"
SEED = 20261201

WORDS = (
    "the a man woman child dog cat is are was playing guitar music movie new great awesome loves everyone "
    "outside sits runs quickly slowly under over between tokenizer transformer embedding server model "
    "request response latency throughput batch queue kernel matrix vector sentence similarity search "
    "unbelievable internationalization antidisestablishmentarianism photosynthesis cryptocurrency "
    "supercalifragilisticexpialidocious Washington London Paris Tokyo Zürich São Paulo naïve café résumé "
    "don't can't it's we'll they're O'Neill e-mail state-of-the-art co-operate 3.14 1,000,000 42 2026"
).split()

ACCENTS = [
    "café", "naïve", "résumé", "jalapeño", "Ñandú", "über", "Ünïcödé", "Ångström", "ÅSA", "Øresund", "Straße",
    "e\u0301", "Cafe\u0301", "a\u0308\u0304", "n\u0303", "\u0041\u030A", "I\u0307stanbul", "İstanbul", "ǅemal",
    "ΣΊΣΥΦΟΣ", "Ὀδυσσεύς", "Ĳssel", "ﬁnancial", "Ⅻ", "ＡＢＣ ｆｕｌｌｗｉｄｔｈ", "㎏", "x\u0338", "q\u0323\u0307",
    "\u0301leading mark", "mark at end\u0301", "\u0300\u0301\u0302", "ḱṷṓn", "Việt Nam", "Łódź", "Ærøskøbing",
]
CJK = [
    "我爱自然语言处理", "北京是中国的首都。", "漢字と仮名の混じった文", "ひらがなだけのぶん", "カタカナ", "ｶﾀｶﾅ",
    "한국어 문장입니다", "안녕하세요, 세계!", "中文English混合", "東京タワー", "𠀀𠀁𪜀", "\U0002B820\U0002B91F\U0002B920",
    "㐀㐁", "豈更", "丽丸", "。、「」『』【】", "中\u3000文", "ㄅㄆㄇ", "ᄀᄁ", "〇〡",
]
EMOJI = [
    "😀", "I ❤️ NY", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇩🇪🇫🇷", "🤷🏻‍♀️", "✔️✅", "🫠🫨", "🥰 love", "☕️ time",
    "👩🏿‍💻 coding", "1️⃣2️⃣", "😀😃😄😁", "emoji😀inside", "©®™",
]
PUNCT = [
    "!!!???", "...", "—–", "«»", "¿¡Hola!?", "Wait...what?!", "a--b", "(x)[y]{z}", "“quoted” ‘single’", "#hashtag @user",
    "$100 & 50% off", "a/b\\c|d", "~^`", "§¶†‡", "•·‥…", "‹›„‚", "⁉⁈", "、。・", "《》〈〉", "؟،؛", "।॥", "٪٫٬",
    "x+y=z<w>v", "_under_score_", "a.b,c;d:e", "'''", '"""', "⹃⹏⸺", "‐‑‒",
]
SPECIALS = [
    "[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "hello [MASK] there", "x[MASK]y", "[CLS][SEP]", "[MASK][MASK]",
    "[mask]", "[ MASK ]", "[MASK", "MASK]", "[[MASK]]", "a [SEP] b [SEP] c", "pre[UNK]post", "[PAD] [PAD]",
    "The capital of France is [MASK].", "[CLS] already there [SEP]", "[MASK]ing", " [MASK] ", "\t[SEP]\n",
    "[MASK]é", "é[MASK]", "[MASKS]", "[CL S]",
]
SCRIPTS = [
    "Привет, мир! Как дела?", "Ελληνικά γράμματα και τόνοι", "مرحبا بالعالم", "שָׁלוֹם עוֹלָם", "नमस्ते दुनिया",
    "สวัสดีชาวโลก", "Բարեւ աշխարհ", "გამარჯობა", "ሰላም ልዑል", "ᚠᚢᚦᚨᚱᚲ", "Ꭳ Ꮃ", "ꦲꦤꦕꦫꦏ", "ཀཁགང", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "𝐁𝐨𝐥𝐝", "ⓐⓑⓒ", "Ⓐ", "ﷺ", "ﷲ", "ئۇيغۇرچە", "Mixed Кириллица and Latin", "αβγ ABC абв",
]
WHITESPACE = [
    "", " ", "   ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028\u2029", "\u200b", "\ufeff", "\u00ad",
    "tab\tseparated\twords", "line\nbreak", "nbsp\u00a0here", "zero\u200bwidth", "bom\ufeffinside", "soft\u00adhyphen",
    "ctrl\u0000nul", "del\u007fchar", "bell\u0007", "\u0085next line", "vt\u000bff\u000c", "\u2000\u2001\u2002words",
    "  leading and trailing  ", "zwj\u200dzwnj\u200c", "lrm\u200erlm\u200f", "\ufffdreplacement", "\ue000private",
    "\U000f0000plane15", "word\u2060joiner", "\u180emongolian",
]
CODE = [
    "def f(x): return x**2", "for (int i = 0; i < n; ++i) { sum += a[i]; }", "let ids = tokenizer.encode(text)",
    "SELECT * FROM users WHERE id = 42;", "<div class=\"x\">hi</div>", "{\"key\": [1, 2, 3]}", "x => x * 2",
    "https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2", "http://example.com/path?q=1&r=2#frag",
    "user.name+tag@example.co.uk", "mailto:someone@example.org", "C:\\Program Files\\app.exe", "/usr/local/bin/swift",
    "0x7FFF_FFFF", "1e-9", "-42.5", "3/4", "12:30pm", "2026-12-01T10:00:00Z", "v1.2.3-beta+exp.sha.5114f85",
    "camelCaseIdentifier", "snake_case_identifier", "SCREAMING_CASE", "MiXeD CaSe TeXt", "iPhone", "McDonald's",
]
# Blocks the random strings draw from: Latin, combining marks, Greek, Cyrillic, Hebrew, Arabic,
# Devanagari, Thai, Hangul, kana, CJK, punctuation, symbols, emoji, private use, supplementary CJK.
BLOCKS = [
    (0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF),
    (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x20A0, 0x20CF),
    (0x2100, 0x214F), (0x2190, 0x21FF), (0x2200, 0x22FF), (0x2E00, 0x2E7F), (0x3000, 0x30FF), (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xE0FF), (0xF900, 0xFAFF), (0xFE00, 0xFE6F), (0xFF00, 0xFFEF),
    (0x10000, 0x1007F), (0x1D400, 0x1D7FF), (0x1F300, 0x1FAFF), (0x20000, 0x2A6DF), (0x2B700, 0x2CEAF),
    (0xE0000, 0xE007F), (0x0, 0x1F), (0x80, 0x9F), (0x10FFF0, 0x10FFFF), (0xFFF0, 0xFFFF), (0x1F1E6, 0x1F1FF),
]


def random_text(rng, blocks, length):
    out = []
    for _ in range(length):
        lo, hi = rng.choice(blocks)
        cp = rng.randint(lo, hi)
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0x20
        out.append(chr(cp))
    return "".join(out)


def build_corpus(seed=SEED):
    """The corpus texts, in a fixed order for a given seed."""
    rng = random.Random(seed)
    texts = []
    texts += ACCENTS + CJK + EMOJI + PUNCT + SPECIALS + SCRIPTS + WHITESPACE + CODE
    # Words around max_input_chars_per_word (100 scalars): 99/100/101 exactly, and well past it.
    for n in (1, 2, 50, 98, 99, 100, 101, 102, 150, 300):
        texts.append("a" * n)
        texts.append("x" + "ab" * ((n - 1) // 2) + ("c" if n % 2 == 0 else ""))
    texts += ["é" * 100, "é" * 101, "e\u0301" * 100, "e\u0301" * 60, "ü" * 101 + " tail", "中" * 120]
    texts += [" ".join(["word"] * 40), "long " + "pneumonoultramicroscopicsilicovolcanoconiosis" * 3]
    texts += ["hello " * 20 + "[MASK] " + "world " * 5]
    for c in range(0x20):
        texts.append(f"a{chr(c)}b")
    texts += ["a\u007fb", "a\u200bb", "a\ufeffb", "a\u00adb", "a\u0085b"]
    # Ordinary sentences from the word list, with casing and punctuation varied.
    for _ in range(500):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 18))]
        if rng.random() < 0.3:
            words = [w.upper() if rng.random() < 0.3 else w.capitalize() for w in words]
        text = " ".join(words)
        text = text[0].upper() + text[1:]
        texts.append(text + rng.choice([".", "!", "?", "...", "", " :)", ";", "?!"]))
    # Sentences spiced with pieces of the special lists.
    pools = ACCENTS + CJK + EMOJI + PUNCT + SPECIALS + SCRIPTS + WHITESPACE + CODE
    for _ in range(250):
        parts = [rng.choice(WORDS) if rng.random() < 0.5 else rng.choice(pools) for _ in range(rng.randint(2, 10))]
        texts.append(rng.choice(["", " ", "\t", "\u00a0"]).join(parts) if rng.random() < 0.2 else " ".join(parts))
    # Random code points: one block at a time, then mixed, with spaces sometimes.
    for _ in range(250):
        block = rng.choice(BLOCKS)
        texts.append(random_text(rng, [block], rng.randint(1, 24)))
    for _ in range(200):
        text = random_text(rng, BLOCKS, rng.randint(1, 30))
        if rng.random() < 0.5:
            text = " ".join(text[i:i + 4] for i in range(0, len(text), 4))
        texts.append(text)
    return texts


def load_tokenizer(path=TOKENIZER):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def expected_cases(tokenizer, texts):
    """For each text, HF's ids untruncated and with enable_truncation(max_length=16); padding off."""
    tokenizer.no_padding()
    tokenizer.no_truncation()
    full = [e.ids for e in tokenizer.encode_batch(texts)]
    tokenizer.enable_truncation(max_length=16)
    short = [e.ids for e in tokenizer.encode_batch(texts)]
    tokenizer.no_truncation()
    return [{"text": t, "ids": a, "ids_max16": b} for t, a, b in zip(texts, full, short)]


def main():
    import tokenizers

    texts = build_corpus()
    cases = expected_cases(load_tokenizer(), texts)
    document = {"tokenizers_version": tokenizers.__version__, "seed": SEED, "cases": cases}
    OUT.write_text(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(cases)} cases, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
