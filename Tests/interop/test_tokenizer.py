"""The committed tokenizer expectations are HF `tokenizers`' own: the corpus fixture the Swift tests
compare against, and the Unicode tables MaaSText uses, are regenerated with the installed library
and must equal what is committed (regenerate with scripts/peers/make_tokenizer_*.py if not)."""
import importlib.util
import json

import tokenizers

from conftest import ROOT

PEERS = ROOT / "scripts" / "peers"


def load(name):
    spec = importlib.util.spec_from_file_location(name, PEERS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_corpus_fixture_is_what_tokenizers_gives():
    corpus = load("make_tokenizer_corpus")
    committed = json.loads(corpus.OUT.read_text(encoding="utf-8"))
    assert committed["tokenizers_version"] == tokenizers.__version__
    texts = corpus.build_corpus(committed["seed"])
    assert [c["text"] for c in committed["cases"]] == texts, "corpus texts changed: regenerate the fixture"
    live = corpus.expected_cases(corpus.load_tokenizer(), texts)
    for want, got in zip(committed["cases"], live):
        assert want == got, f"{want['text']!r}: committed {want['ids']} / {want['ids_max16']}, tokenizers {got['ids']} / {got['ids_max16']}"


def test_unicode_tables_are_what_tokenizers_uses():
    tables = load("make_tokenizer_tables")
    assert tables.OUT.read_text() == tables.render(), "regenerate Sources/MaaSText/BertUnicodeTables.swift"
