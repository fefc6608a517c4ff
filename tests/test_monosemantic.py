"""SAE runs saved and loaded, the feature index behind the browser, and the starter's annotation made from features
(generate_text(..., monosemantic=True, sae=...) and pico.py --monosemantic_enabled)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import torch

from conftest import ROOT
from pico_helpers import (FeatureBrowser, FeatureIndex, SAEConfig, SAERun, SparseAutoencoder, TrainConfig,
                          TransformerModel, annotate_features, build_model, feature_purity, generate_text, load_corpus, load_sae,
                          saved_sae, sequence_losses, story_activations, top_activations, trained_sae)
from pico_helpers.runs.store import load_checkpoint

TINY_SAE = dict(n_features=32, k=4, steps=20, batch_size=64, resample_every=10, train_tokens=2000)


@pytest.fixture(autouse=True, scope="module")
def _tiny_tensors_one_thread(one_thread):
    """Tiny tensors: one CPU thread is fastest, and immune to slowdowns when other jobs share the cores."""


def tiny_model(seed: int = 0, block_size: int = 8) -> TransformerModel:
    torch.manual_seed(seed)
    return TransformerModel(vocab_size=50257, d_model=16, n_heads=2, n_blocks=2, block_size=block_size).eval()


def hand_made_run(d_model: int = 16, n_features: int = 24, layer: int = 1) -> SAERun:
    """An SAERun around an untrained top-3 SAE, labelled F0 'a0', F1 'a1', ... (every other one unlabelled)."""
    sae = SparseAutoencoder(d_model, n_features, k=3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        sae.b_enc.fill_(0.5)  # so that about every token has three features firing
    labels = [f"a{i}" if i % 2 == 0 else "" for i in range(n_features)]
    return SAERun(sae, SAEConfig(layer=layer, n_features=n_features, k=3), {}, torch.zeros(n_features), labels, {},
                  ROOT / "unused", "run")


def block_output(model: TransformerModel, ids: list, layer: int) -> torch.Tensor:
    """Block ``layer``'s output at the LAST position of ``ids`` (D,), running the blocks by hand."""
    x = model.token_embedding(torch.tensor(ids)[None]) + model.pos_embedding.weight[:len(ids)]  # (1, T, D)
    for block in model.blocks[:layer + 1]:
        x = x + block.attn(block.norm1(x))[0]
        x = x + block.mlp(block.norm2(x))
    return x[0, -1]


# --- top activations and purity, against a dense reference ---

def test_top_activations_in_chunks_equal_one_dense_topk_and_purity_counts_tokens():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(300, 8, generator=g)
    W, alive = torch.randn(8, 5, generator=g), torch.tensor([1.0, 1, 1, 1, 0])
    features = lambda x: torch.relu(x @ W) * alive  # noqa: E731  (N, 5); feature 4 never fires
    values, rows, counts = top_activations(features, acts, n=7, batch_size=64)  # chunks must add up to one pass
    dense = features(acts)  # (300, 5)
    assert torch.equal(counts, (dense > 0).sum(0)) and counts[4] == 0
    assert torch.allclose(values, dense.topk(7, dim=0).values)
    assert torch.equal(dense.gather(0, rows), values)  # each row holds its value (ties may pick either row)
    ids = torch.arange(300) % 4  # the token at each row
    purity = feature_purity(values, rows, ids, next_ids=(ids + 1) % 4)
    for f in range(5):
        seen = [ids[r].item() for r, v in zip(rows[:, f].tolist(), values[:, f].tolist()) if v > 0]
        if not seen:
            assert purity["token"][f].isnan() and purity["mode"][f] == -1
            continue
        token, count = Counter(seen).most_common(1)[0]
        assert purity["token"][f].item() == pytest.approx(count / len(seen))
        assert purity["next"][f].item() == pytest.approx(count / len(seen))  # next = token + 1: the same counts
        assert Counter(seen)[purity["mode"][f].item()] == count


# --- the annotation ---

@torch.no_grad()
def test_features_of_each_token_match_a_hand_run_with_its_own_window(enc):
    model, run = tiny_model(), hand_made_run()
    ids = enc.encode_ordinary("Once upon a time, there was a little cat who liked to play in the sun.")
    assert len(ids) > 2 * model.block_size  # tokens past block_size are read with the last block_size tokens
    start = 3
    got = annotate_features(model, run, ids, start, lambda i: enc.decode([i]))
    expected = ""
    for p in range(start, len(ids)):
        window = ids[max(0, p - model.block_size + 1):p + 1]
        f = run.sae.encode(block_output(model, window, run.layer)[None])[0]  # (F,)
        top = f.topk(3)
        names = [f"F{i}" + (f":'a{i}'" if i % 2 == 0 else "") for v, i in zip(top.values.tolist(), top.indices.tolist())
                 if v > 0]
        expected += f"{enc.decode([ids[p]])}[{' '.join(names) or '-'}]"
    assert got == expected


def test_generate_text_annotates_with_the_sae_or_else_the_neighbours(enc):
    model, run = tiny_model(), hand_made_run()
    text, with_sae = generate_text(model, enc, "Once upon a", max_new_tokens=4, monosemantic=True, sae=run)
    _, with_nn = generate_text(model, enc, "Once upon a", max_new_tokens=4, monosemantic=True)
    assert text.startswith("Once upon a") and with_sae.startswith("Once upon a")
    assert with_sae.count("[F") == 4 and "NN=" not in with_sae
    assert with_nn.count("[NN=[") == 4
    assert generate_text(model, enc, "Once upon a", max_new_tokens=4, sae=run) == (text, text)  # off: no annotation


# --- SAE runs: saved, loaded, retrained when the key changes ---

@pytest.fixture(scope="module")
def stories(tinystories_file):
    config = TrainConfig.quick(input_files=[], tinystories_weight=1.0, tinystories_path=str(tinystories_file),
                               tinystories_stories=80, block_size=16, embed_size=16, n_heads=2, n_blocks=2)
    corpus = load_corpus(config)
    torch.manual_seed(0)
    return build_model("kvcache_transformer", config, corpus.vocab).eval(), corpus


def test_story_activations_put_every_token_in_order(stories):
    model, corpus = stories
    seqs = list(corpus.val.tinystories)[:7]
    got = story_activations(model, seqs, layer=1, batch_size=3)  # batches of similar length, rows back in order
    assert got.acts.shape == (sum(map(len, seqs)), 16) and got.ids.tolist() == [t for s in seqs for t in s]
    for i in (0, 4, 6):
        alone = story_activations(model, [seqs[i]], layer=1).acts  # (len, D): one sequence, no padding
        rows = got.acts[got.starts[i]:got.starts[i + 1]]
        assert torch.allclose(rows, alone, atol=1e-5)  # float32, a padded batch sums in another order
        assert got.where(got.starts[i] + 2) == (i, 2)
    assert got.next_ids[got.starts[1] - 1] == -1 and got.next_ids[0] == seqs[0][1]


def test_trained_sae_is_saved_then_loaded_and_trained_again_for_another_model(stories, tmp_path):
    model, corpus = stories
    config = SAEConfig.quick(layer=1, **TINY_SAE)
    first = trained_sae(model, corpus, config, "t", quick=True, run_id="run-a", folder=tmp_path, verbose=False)
    assert not first.loaded and (tmp_path / "sae.pt").is_file()
    info = json.loads((tmp_path / "sae.json").read_text())
    assert info["run_id"] == "run-a" and info["config"]["k"] == 4
    m = first.metrics
    assert m["l0"] <= 4 and 0 <= m["dead_fraction"] <= 1 and m["train_tokens"] <= 2000
    assert m["eval_tokens"] == sum(len(s) for s in corpus.val.tinystories)  # eval_tokens None: every held-out token
    per_token = sequence_losses(model, list(corpus.val.tinystories)).nanmean().item()  # every held-out target once
    assert m["loss"]["clean"] == pytest.approx(per_token, abs=1e-4) and len(first.labels) == 32

    again = trained_sae(model, corpus, config, "t", quick=True, run_id="run-a", folder=tmp_path, verbose=False)
    assert again.loaded and again.metrics == first.metrics and again.labels == first.labels
    assert all(torch.equal(a, b) for a, b in zip(first.sae.state_dict().values(), again.sae.state_dict().values()))
    assert not trained_sae(model, corpus, config, "t", quick=True, run_id="run-b", folder=tmp_path,
                           verbose=False).loaded  # another model run: trained again
    assert not trained_sae(model, corpus, config.replace(k=2), "t", quick=True, run_id="run-b", folder=tmp_path,
                           verbose=False).loaded  # other settings: trained again

    with pytest.raises(ValueError, match="trained on model run run-b"):
        load_sae(tmp_path / "sae.pt", run_id="run-a")
    assert saved_sae(tmp_path, "run-b")[1] == f"annotated with SAE features from {tmp_path / 'sae.pt'}"
    assert saved_sae(tmp_path, "run-a") == (None, f"annotated with embedding neighbours (the SAE at {tmp_path / 'sae.pt'} "
                                                  "was trained on another run of this model: train it again)")
    (tmp_path / "sae.pt").write_bytes(b"not a checkpoint")
    assert "cannot read the SAE" in saved_sae(tmp_path, "run-b")[1]
    assert not trained_sae(model, corpus, config, "t", quick=True, run_id="run-b", folder=tmp_path,
                           verbose=False).loaded  # a damaged file is written again
    assert saved_sae(tmp_path / "nothing", "run-b") == (None, "annotated with embedding neighbours "
                                                              "(no SAE saved for this run)")


# --- the feature index behind the browser ---

@torch.no_grad()
def test_feature_index_against_a_dense_encode(stories, tmp_path, enc):
    model, corpus = stories
    run = trained_sae(model, corpus, SAEConfig.quick(layer=1, **TINY_SAE), "b", quick=True, run_id="r",
                      folder=tmp_path, verbose=False)
    seqs = list(corpus.val.tinystories)
    index = FeatureIndex(model, run, enc, seqs, max_tokens=10_000, top=5)
    dense = run.sae.encode(story_activations(model, seqs, 1).acts)  # (N, F), every held-out token
    assert torch.equal(index.counts, (dense > 0).sum(0))
    f = int(index.counts.argmax())
    best = index.top_contexts(f, n=3)
    assert [c["value"] for c in best] == pytest.approx(dense[:, f].topk(3).values.tolist(), abs=1e-6)
    ctx = best[0]
    assert ctx["acts"][ctx["at"]] == pytest.approx(ctx["value"], abs=1e-6)  # the activating token is in its context
    token = index.ids[ctx["row"]].item()
    occurrences = dense[index.ids == token]
    count, feats = index.token_features(token, n=3)
    assert count == len(occurrences) and [i for i, _ in feats] == occurrences.mean(0).topk(3).indices.tolist()
    share = Counter(index.ids[index.rows[:, f]].tolist()).most_common(1)[0][1] / 5
    assert index.purity["token"][f].item() == pytest.approx(share)
    up, down = index.logit_effects(f, n=4)
    assert len(up) == len(down) == 4 and up[0][1] >= up[-1][1] > down[-1][1]

    view = FeatureBrowser(index, feature=f)
    assert f"Feature {f}</b>" in view.last_html and "top contexts" in view.last_html
    view.token.value = enc.decode([token])  # the observer looks the token up and shows its strongest feature
    assert view.feature.value == feats[0][0] and f"Feature {feats[0][0]}</b>" in view.last_html
    view.sentence.value = "Once upon a time"
    assert view.per_token.value.count("<tr>") == 1 + 4  # a header and the four tokens


# --- pico.py --monosemantic_enabled ---

def pico(tmp_path):
    args = ["--models", "kvcache_transformer", "--block_size", "16", "--embed_size", "16", "--n_heads", "2",
            "--n_blocks", "2", "--tinystories_weight", "0.0", "--input_files", "input_files/3seqs.txt", "--prompt",
            "0 1 2 3 4", "--max_steps_per_epoch", "3", "--epochs", "1", "--log_every", "0", "--new_tokens", "4",
            "--device_id", "cpu", "--monosemantic_enabled", "--output_dir", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "PICO_TINYSTORIES"}
    r = subprocess.run([sys.executable, "pico.py", *args], cwd=ROOT, capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_pico_annotates_with_a_saved_sae_else_with_neighbours(tmp_path):
    out = pico(tmp_path)
    assert "[kvcache_transformer] annotated with embedding neighbours (no SAE saved for this run)" in out
    assert "greedy annotated: 0 1 2 3 4" in out and "[NN=[" in out

    folder = tmp_path / "kvcache_transformer"  # an SAE for that run, saved where pico.py looks
    ckpt = load_checkpoint(folder / "checkpoint.pt")
    config = TrainConfig(**ckpt["config"])
    corpus = load_corpus(config)
    model = build_model("kvcache_transformer", config, corpus.vocab)
    model.load_state_dict(ckpt["model"])
    trained_sae(model.eval(), corpus, SAEConfig.quick(layer=1, **TINY_SAE), "cli", run_id=ckpt["run_id"],
                folder=folder, verbose=False)

    out = pico(tmp_path)  # the run is finished: loaded, not trained again
    assert "already trained" in out
    assert f"[kvcache_transformer] annotated with SAE features from {folder / 'sae.pt'}" in out
    annotated = [line for line in out.splitlines() if "annotated: " in line]
    assert len(annotated) == 3 and all("[F" in line or "[-]" in line for line in annotated)
    assert "NN=" not in "".join(annotated)
