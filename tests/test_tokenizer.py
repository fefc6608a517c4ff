"""GPT-2's tokenizer: known ids, round trips, the offline rank file, and the corpus vocabulary's id round trip."""
from __future__ import annotations

import pytest

from conftest import ROOT, SHARED_DATA


def test_known_ids(enc):
    assert enc.n_vocab == 50257
    assert enc.encode("Hello world") == [15496, 995]
    assert enc.encode("Once upon a time") == [7454, 2402, 257, 640]
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]


def test_offline_encoding_is_tiktoken_gpt2_layout(enc):
    from pico_helpers.data.tokenizer import RANK_FILE_SHA256, rank_file_path

    path = rank_file_path()
    assert path is not None, "make setup provisions the rank file; run it first"
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == RANK_FILE_SHA256
    # The byte-level pieces the regex produces: numbers split, a leading space is part of the word.
    assert [enc.decode([t]) for t in enc.encode("0 1 2 10 100 1000")] == ["0", " 1", " 2", " 10", " 100", " 1000"]
    assert enc.decode(enc.encode("it's  spaced\n\nout")) == "it's  spaced\n\nout"


@pytest.mark.parametrize("name", ["3seqs.txt", "tinystories_valid_sample.txt"])
def test_round_trip_on_input_files(enc, name):
    path = ROOT / "input_files" / name if name == "3seqs.txt" else SHARED_DATA / name
    if not path.is_file():
        pytest.skip((f"needs {name}, the 1,000-story TinyStories validation sample that the course machines keep "
                     "beside the repository; skipped in a plain clone") if path.parent == SHARED_DATA
                    else f"input_files/{name} is missing")
    text = path.read_text(encoding="utf-8")[:200_000]
    assert enc.decode(enc.encode_ordinary(text)) == text


def test_corpus_vocabulary_is_an_id_mapping_not_a_tokenizer(enc):
    # The old compact vocabulary encoded and decoded text; the corpus vocabulary only maps ids (tests/test_vocab.py),
    # so text always goes through GPT-2's tokenizer, and the round trip is GPT-2 -> model -> GPT-2 ids.
    from pico_helpers.data import CorpusVocab

    seqs = [enc.encode_ordinary("0 1 2 3 4 5"), enc.encode_ordinary("1 4 9 16")]
    vocab = CorpusVocab.from_sequences(seqs)
    assert vocab.n_vocab == len({t for s in seqs for t in s}) + 1  # the ids used, plus "other"
    ids = vocab.to_model(enc.encode_ordinary("1 2 3"))
    assert max(ids) < vocab.other_id and enc.decode(vocab.to_gpt2(ids)) == "1 2 3"
    assert vocab.to_model(enc.encode_ordinary("Once upon a time")) == [vocab.other_id] * 4  # no error: "other"
    assert not hasattr(vocab, "decode") and not hasattr(vocab, "encode_ordinary")


def test_missing_rank_file_error_names_the_command(monkeypatch, tmp_path):
    import pico_helpers.data.tokenizer as tok

    monkeypatch.setattr(tok, "rank_file_path", lambda: None)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty cache: tiktoken must download, and cannot
    import tiktoken.load

    def no_network(*a, **k):
        raise ConnectionError("no network in this test")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    tok.get_tokenizer.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="make setup"):
            tok.get_tokenizer()
    finally:
        tok.get_tokenizer.cache_clear()
