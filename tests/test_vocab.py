"""The corpus vocabulary: a proper distribution over all 50,257 GPT-2 ids, its loss a full-vocabulary cross-entropy."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pico_helpers.analysis import attention_maps, embedding_table
from pico_helpers.config import MODEL_NAMES, TrainConfig
from pico_helpers.data import CorpusVocab, CorpusVocabModel, load_corpus
from pico_helpers.models import build_model
from pico_helpers.sample import generate_text, generate_tokens
from pico_helpers.training import evaluate, next_token_loss

V_GPT2 = 50257
# float64 model and logits (the wrapper's charge and offset are float64 too): the fused loss and the reference
# below sum the same terms in another order, so they agree to ~1e-13; a missing log(n_other) is ~10.8 per "other".
TOL = 1e-9  # float64 throughout: summation order only


@pytest.fixture(scope="module")
def corpus():
    return load_corpus(TrainConfig.quick(test_fraction=0.1))


def full_vocab_loss(logits, gpt2_tokens, mask):
    """Cross-entropy from the 50,257 probabilities themselves: -log p(target), a loop-free but plain reference."""
    log_p = torch.log(torch.softmax(logits, dim=-1))  # (T, B, 50257), no log_softmax shortcut
    nll = -log_p[:-1].gather(-1, gpt2_tokens[1:, :, None])[..., 0]  # (T-1, B)
    keep = mask[1:]
    return nll[keep].sum() / keep.sum()


def test_mapping_round_trip_and_the_ids_a_corpus_uses(enc):
    seqs = [enc.encode_ordinary("0 1 2 3 4 5"), enc.encode_ordinary("1 4 9 16")]
    vocab = CorpusVocab.from_sequences(seqs)
    used = sorted({t for s in seqs for t in s})
    assert vocab.ids == used and vocab.n_vocab == len(used) + 1 and vocab.other_id == len(used)
    assert vocab.n_other == V_GPT2 - len(used) and vocab.other_correction == pytest.approx(math.log(V_GPT2 - len(used)))
    ids = enc.encode_ordinary("1 2 3")
    assert max(vocab.to_model(ids)) < vocab.other_id and vocab.to_gpt2(vocab.to_model(ids)) == ids
    assert enc.decode(vocab.to_gpt2(vocab.to_model(ids))) == "1 2 3"
    unseen = enc.encode_ordinary(" Once upon a time")
    assert vocab.to_model(unseen) == [vocab.other_id] * len(unseen)  # not an error: the "other" class
    assert vocab.to_model(torch.tensor([ids, ids])).tolist() == [vocab.to_model(ids)] * 2
    with pytest.raises(ValueError, match="'other' class"):
        vocab.to_gpt2([vocab.other_id])


def test_full_logits_are_a_distribution_over_all_gpt2_ids(corpus):
    vocab = corpus.vocab
    logits = torch.randn(5, 3, vocab.n_vocab, dtype=torch.float64) * 3  # (T, B, V_model)
    full = vocab.full_logits(logits)  # (T, B, 50257)
    assert full.shape == (5, 3, V_GPT2)
    total = torch.softmax(full, dim=-1).sum(-1)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)
    p_model = torch.softmax(logits, dim=-1)
    p_full = torch.softmax(full, dim=-1)
    # each modelled id keeps its probability; "other"'s is split evenly over the n_other ids (1e-9 relative: the
    # float64 softmax sums 50,257 terms, ~1e-11 of rounding)
    torch.testing.assert_close(p_full[..., vocab.ids], p_model[..., :-1], rtol=1e-9, atol=0)
    unmodelled = torch.ones(V_GPT2, dtype=torch.bool)
    unmodelled[vocab.ids] = False
    share = p_model[..., -1:] / vocab.n_other
    torch.testing.assert_close(p_full[..., unmodelled], share.expand(5, 3, vocab.n_other), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", ["lstm_seq", "kvcache_transformer"])
def test_loss_equals_the_full_vocabulary_cross_entropy(corpus, name):
    vocab = corpus.vocab
    cfg = TrainConfig.quick(embed_size=16, n_heads=2, n_blocks=1)
    model = build_model(name, cfg, vocab).double()  # a CorpusVocabModel: GPT-2 ids in, 50,257 logits out
    gpt2 = torch.tensor([vocab.ids[i % len(vocab.ids)] for i in range(24)]).view(8, 3)  # (T, B) modelled ids
    gpt2[3, 0], gpt2[5, 1], gpt2[7, 2] = 7454, 2402, 640  # " Once", " upon", " time": never in 3seqs -> "other"
    mask = torch.ones(8, 3, dtype=torch.bool)
    mask[6:, 1] = False  # padding at the end of one sequence
    tokens = vocab.to_model(gpt2)
    assert int((tokens[1:] == vocab.other_id).sum()) == 3, "the test covers targets in the 'other' class"
    fused = next_token_loss(model, gpt2, mask).detach()
    with torch.no_grad():  # the reference maps with CorpusVocab's plain functions (float64 offsets), not the wrapper
        reference = full_vocab_loss(vocab.full_logits(model.model(tokens)), gpt2, mask)
    assert abs(fused.item() - reference.item()) < TOL, (fused.item(), reference.item())
    plain = next_token_loss(model.model, tokens, mask).detach()  # the raw model: the n_other ids' shares are missing
    # 19 real targets, 3 of them "other": the charge, in float64
    assert fused.item() - plain.item() == pytest.approx(3 / 19 * vocab.other_correction, rel=1e-9)


def test_validation_tokens_unseen_in_training_are_scored(corpus):
    vocab = corpus.vocab
    train_ids = {t for s in corpus.train.other for t in s}  # GPT-2 ids
    assert train_ids <= set(vocab.ids)  # every id training uses has its own row
    n_unseen = sum(vocab.to_model(s).count(vocab.other_id) for s in corpus.val.other)
    assert f"({n_unseen:,} validation tokens unseen in training)" in corpus.description
    fake_val = [corpus.enc.encode_ordinary("1 2 3 dragon 4 5")]  # " dragon" is not in 3seqs
    assert vocab.other_id in vocab.to_model(fake_val[0])
    model = build_model("lstm_seq", TrainConfig.quick(embed_size=16), vocab)
    loss = evaluate(model, fake_val, TrainConfig.quick(batch_size=1))
    gpt2 = torch.tensor(fake_val[0])[:, None]
    with torch.no_grad():
        reference = full_vocab_loss(vocab.full_logits(model.model(vocab.to_model(gpt2))).double(), gpt2,
                                    torch.ones_like(gpt2, dtype=torch.bool))
    assert loss == pytest.approx(float(reference), rel=1e-5)  # float32 model: 1e-5 relative


def test_generation_speaks_gpt2_ids(corpus):
    vocab = corpus.vocab
    model = build_model("lstm_seq", TrainConfig.quick(embed_size=16), vocab)
    prompt = corpus.enc.encode_ordinary("0 1 2 3 4")
    for top_p in (None, 1.0):
        new = generate_tokens(model, prompt, 30, top_p=top_p, seed=1)
        assert len(new) == 30 and all(0 <= i < V_GPT2 for i in new)
        assert new == generate_tokens(model, prompt, 30, top_p=top_p, seed=1, use_cache=False)
    with torch.no_grad():  # the "other" logit raised far above the rest: the draws spread over the unmodelled ids
        model.model.head.bias[vocab.other_id] = 50.0
    drawn = generate_tokens(model, prompt, 20, top_p=1.0, seed=0)
    assert all(i not in vocab.ids for i in drawn) and len(set(drawn)) > 10  # spread over the n_other ids
    text, _ = generate_text(model, corpus.enc, "0 1 2 3 4", max_new_tokens=5, top_p=1.0, seed=0)
    assert text == corpus.enc.decode(prompt + drawn[:5])  # the same draws, decoded by GPT-2's tokenizer


def test_inspection_reads_gpt2_ids(corpus):
    vocab = corpus.vocab
    model = build_model("kvcache_transformer", TrainConfig.quick(embed_size=16, n_heads=2, n_blocks=1), vocab)
    table = embedding_table(model)  # (50257, D): a row per GPT-2 id
    assert table.shape == (V_GPT2, 16)
    torch.testing.assert_close(table[vocab.ids], model.model.embedding_table()[:-1].detach())  # model row i = ids[i]
    assert not table[7454].any()  # " Once" is not in 3seqs: a zero row
    attn, tokens = attention_maps(model, corpus.enc, "0 1 2 dragon")  # " dragon" is read as "other"
    assert tokens == ["0", " 1", " 2", " dragon"] and attn.shape[-2:] == (4, 4)


# --- CorpusVocabModel: the one place ids are mapped ---

def _batch_with_unseen_targets(vocab):
    """(8, 3) GPT-2 ids cycling through the modelled ones, with 3 targets training never saw, and a (8, 3) mask."""
    gpt2 = torch.tensor([vocab.ids[(7 * i) % len(vocab.ids)] for i in range(24)]).view(8, 3)
    gpt2[2, 0], gpt2[4, 2], gpt2[6, 1] = 7454, 2402, 640  # " Once", " upon", " time": not in 3seqs
    mask = torch.ones(8, 3, dtype=torch.bool)
    mask[7:, 2] = False  # padding at the end of one sequence
    return gpt2, mask


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_corpus_vocab_model_forward_is_the_raw_model_mapped(corpus, name):
    vocab = corpus.vocab
    cfg = TrainConfig.quick(embed_size=16, n_heads=2, n_blocks=1, kgram_k=2)
    model = build_model(name, cfg, vocab)
    raw = model.model
    assert isinstance(model, CorpusVocabModel) and model.vocab is vocab and model.vocab_size == V_GPT2
    assert not hasattr(raw, "vocab")  # nothing patches the raw model: the wrapper alone knows the vocabulary
    gpt2, _ = _batch_with_unseen_targets(vocab)
    model.eval()
    with torch.no_grad():
        logits = model(gpt2)  # (T, B, 50257)
        # the same float32 arithmetic on the same values, so equal bit for bit
        assert torch.equal(logits, vocab.full_logits(raw(vocab.to_model(gpt2))))
        total = torch.softmax(logits.double(), dim=-1).sum(-1)  # a distribution over all 50,257 GPT-2 ids
        torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)
        # next_logits, fed the whole context at once or the prompt then one id at a time, gives forward's last row
        last, _ = model.next_logits(gpt2, None)
        torch.testing.assert_close(last, logits[-1], rtol=1e-5, atol=1e-5)  # another order of float32 sums
        first, state = model.next_logits(gpt2[:5], None)
        torch.testing.assert_close(first, logits[4], rtol=1e-5, atol=1e-5)
        for t in range(5, 8):
            step, state = model.next_logits(gpt2[t:t + 1], state)
        torch.testing.assert_close(step, logits[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_corpus_vocab_model_loss_is_the_full_vocabulary_cross_entropy(corpus, name):
    vocab = corpus.vocab
    cfg = TrainConfig.quick(embed_size=16, n_heads=2, n_blocks=1, kgram_k=2)
    model = build_model(name, cfg, vocab).double()
    gpt2, mask = _batch_with_unseen_targets(vocab)
    assert int((vocab.to_model(gpt2)[1:][mask[1:]] == vocab.other_id).sum()) == 3, "targets training never saw"
    fused = model.next_token_loss(gpt2, mask, 5)  # the inner fused loss (chunks of 5 rows) + the "other" charge
    assert fused.item() == next_token_loss(model, gpt2, mask, 5).item()  # the loss training uses is the model's
    with torch.no_grad():
        logits = model(gpt2)  # (T, B, 50257) float64
    per_target = F.cross_entropy(logits[:-1].reshape(-1, V_GPT2), gpt2[1:].reshape(-1), reduction="none")
    reference = per_target[mask[1:].reshape(-1)].mean()
    assert abs(fused.item() - reference.item()) < TOL, (fused.item(), reference.item())


def test_corpus_vocab_model_embedding_table(corpus):
    vocab = corpus.vocab
    model = build_model("kvcache_transformer", TrainConfig.quick(embed_size=16, n_heads=2, n_blocks=1), vocab)
    table = model.embedding_table()
    raw = model.model.embedding_table()  # (n_vocab, 16)
    assert table.shape == (V_GPT2, 16)
    known = torch.zeros(V_GPT2, dtype=torch.bool)
    known[vocab.ids] = True  # the ids training used
    assert torch.equal(model.known, known)
    assert (table[~known] == 0).all() and (table[known] != 0).any(dim=-1).all()  # zero rows exactly where unknown
    assert torch.equal(table[vocab.ids], raw[:-1])  # GPT-2 id ids[i] is model row i
    assert not hasattr(model.model, "vocab") and corpus.wrap(model.model).model is model.model


def test_full_vocabulary_still_works():
    cfg = TrainConfig.quick(vocab="full")
    corpus = load_corpus(cfg)
    assert corpus.vocab is None and corpus.vocab_size == V_GPT2 and "full vocabulary" in corpus.description
    assert max(max(s) for s in corpus.train.other) >= 320  # GPT-2 ids, not compact ones
    with pytest.raises(ValueError, match="vocab must be one of 'corpus', 'full'"):
        TrainConfig.quick(vocab="compact")
