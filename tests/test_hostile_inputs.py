"""Issue 28, "no traceback from any input": every hostile value ends in one line that names the problem and the way
out, through the entry point a student uses (pico.py's main, or the API call itself), or it works."""
from __future__ import annotations

import dataclasses
import importlib.util
import io
import os
import tarfile

import pytest
import torch
from conftest import ROOT

from pico_helpers import models
from pico_helpers.runs import memory
from pico_helpers.config import TrainConfig
from pico_helpers.data import iterate_batches, load_corpus
from pico_helpers.models import build_model, count_parameters
from pico_helpers.runs.store import check_run_name
from pico_helpers.sample import generate_tokens
from pico_helpers.training.setup import pick_device

THREESEQS = str(ROOT / "input_files" / "3seqs.txt")
QUICK = ["--tinystories_weight", "0", "--input_files", THREESEQS, "--block_size", "16", "--epochs", "1",
         "--max_steps_per_epoch", "2", "--sample_every_s", "0", "--bf16", "off"]  # other sizes: the defaults


def load_pico():
    spec = importlib.util.spec_from_file_location("pico_hostile", ROOT / "pico.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pico = load_pico()


def refused(capsys, tmp_path, *flags) -> str:
    """Run pico.py's main with ``flags``; assert exit code 2, one stderr line "error: ...", no traceback and nothing
    written; return the line."""
    out = tmp_path / "runs"
    rc = pico.main([*QUICK, "--output_dir", str(out), *flags])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert not out.exists(), "nothing may be trained or saved"
    return lines[0]


# --- devices ---

@pytest.mark.parametrize("device", ["meta", "xpu"])
def test_devices_other_than_cpu_cuda_mps_are_refused_with_the_list(capsys, tmp_path, device):
    line = refused(capsys, tmp_path, "--device_id", device)
    assert f"device_id '{device}' is not a device this workbook trains on; use cpu, cuda, cuda:N, mps or auto" in line
    with pytest.raises(ValueError, match="use cpu, cuda, cuda:N, mps or auto"):
        pick_device(device)


# --- sizes that cannot fit ---

@pytest.fixture
def memory_64gb(monkeypatch):
    """A machine with 64 GB free, whatever this one has: the refusals below do not depend on the test machine."""
    where = "the machine has 64.0 GB of memory available"
    monkeypatch.setattr(memory, "available_memory", lambda device: (64 * 10 ** 9, where))


@pytest.mark.parametrize("flags, size", [
    (["--embed_size", "1000000"], "embed_size 1000000"),
    (["--block_size", "1000000000", "--models", "kvcache_transformer"], "block_size 1000000000"),
    (["--kgram_k", "100000", "--models", "kgram_mlp_seq"], "kgram_k 100000"),
    (["--num_inner_mlp_layers", "100000", "--models", "kgram_mlp_seq"], "num_inner_mlp_layers 100000"),
    (["--n_blocks", "100000", "--models", "kvcache_transformer"], "n_blocks 100000"),
])
def test_sizes_that_cannot_fit_are_refused_with_an_estimate(capsys, tmp_path, memory_64gb, flags, size):
    line = refused(capsys, tmp_path, *flags)  # counted on the meta device: refused before any weight is made
    field = size.split()[0]
    assert f"with {size} cannot fit: it needs about " in line and " GB (" in line, line
    assert "but the machine has 64.0 GB of memory available" in line and f"; lower {field}" in line, line


def test_the_real_memory_is_read_and_a_terabyte_model_refused():
    free, where = memory.available_memory(torch.device("cpu"))
    assert free > 0 and f"{free / 1e9:,.1f} GB" in where
    E, V = 1_000_000, 50257  # the LSTM's parameters by hand: embedding, 4 gates (two biases each), head
    params = V * E + 4 * (E * E + E * E + 2 * E) + E * V + V
    with pytest.raises(ValueError) as refusal:
        build_model("lstm_seq", TrainConfig.quick(embed_size=E))
    assert str(refusal.value) == (
        f"lstm_seq with embed_size 1000000 cannot fit: it needs about {params * 16 / 1e9:,.1f} GB ({params:,} "
        f"parameters x 16 bytes: fp32 weights, gradients and Adam's two moments), but {where}; lower embed_size")


def test_sizes_whose_shapes_overflow_are_refused_too(capsys, tmp_path):
    line = refused(capsys, tmp_path, "--embed_size", str(10 ** 12))  # torch cannot even describe such a weight
    assert "lstm_seq with embed_size 1000000000000 cannot fit: one weight alone would hold over 2**63 bytes; lower " \
           "embed_size" in line, line


@pytest.mark.parametrize("name, field", [("kvcache_transformer", "n_blocks"),
                                         ("kgram_mlp_seq", "num_inner_mlp_layers")])
def test_the_estimate_of_repeated_layers_is_the_real_count(name, field):
    # Many repeated layers are counted from models with one and two of them; the reference is the model itself.
    config = TrainConfig.quick(embed_size=16, n_heads=2, **{field: 5})
    params, extra = memory.estimate_size(name, config, 40, models._construct)
    assert params == count_parameters(build_model(name, config, 40))
    assert (params, extra) == memory._footprint(name, config, 40, models._construct)


@pytest.mark.parametrize("vocab", [0, -3, True, "50257", 2.5])
def test_a_vocabulary_of_no_ids_is_refused(vocab):
    with pytest.raises(ValueError, match=r"^vocab must be corpus.vocab \(a CorpusVocab\), None .* or a number of "
                                         r"ids >= 1, got "):
        build_model("lstm_seq", TrainConfig.quick(embed_size=8), vocab)


def test_a_config_that_is_not_a_trainconfig_is_named():
    with pytest.raises(ValueError, match="config must be a TrainConfig, got dict"):
        build_model("lstm_seq", {"embed_size": 8})


# --- torchrun's environment ---

@pytest.mark.parametrize("env, named", [
    ({"WORLD_SIZE": "0", "RANK": "0"}, "WORLD_SIZE must be an integer >= 1 (torchrun sets it), got '0'"),
    ({"WORLD_SIZE": "banana", "RANK": "0"}, "WORLD_SIZE must be an integer >= 1 (torchrun sets it), got 'banana'"),
    ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK must be an integer in 0..1 (torchrun sets it), got '5'"),
    ({"WORLD_SIZE": "1", "RANK": "0", "PICO_DIST_BACKEND": "banana"},
     "PICO_DIST_BACKEND 'banana' is not a torch.distributed backend of this torch: use gloo"),
])
def test_a_broken_torchrun_environment_is_named(capsys, tmp_path, monkeypatch, env, named):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    line = refused(capsys, tmp_path)
    assert named in line, line
    assert "unset" in line  # the way out
    assert not torch.distributed.is_initialized()


# --- a config changed after it was made ---

def test_the_config_is_frozen_and_says_how_to_change_it():
    cfg = TrainConfig.quick()
    with pytest.raises(dataclasses.FrozenInstanceError,
                       match=r"^TrainConfig is frozen: use cfg = cfg.replace\(batch_size=0\) for a copy"):
        cfg.batch_size = 0
    with pytest.raises(dataclasses.FrozenInstanceError, match="no field 'batch_sise' \\(did you mean 'batch_size'"):
        cfg.batch_sise = 32
    assert cfg.batch_size == 16 and cfg.replace(batch_size=32).batch_size == 32
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        cfg.replace(batch_size=0)  # the copy is checked as a new config is


# --- generation's arguments ---

@pytest.fixture(scope="module")
def tiny_lstm():
    return build_model("lstm_seq", TrainConfig.quick(embed_size=8), None)  # GPT-2 ids in and out


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_new_tokens=2.5), r"max_new_tokens must be an integer in 0..100,000, got 2.5"),
    (dict(max_new_tokens=-3), r"max_new_tokens must be an integer in 0..100,000, got -3"),
    (dict(max_new_tokens=10 ** 12), r"max_new_tokens must be an integer in 0..100,000, got 1000000000000"),
    (dict(prompt_ids=[15496, 60000]), r"prompt id 60000 is outside the model's vocabulary: GPT-2 ids are 0..50256"),
    (dict(prompt_ids=[-1]), r"prompt id -1 is outside the model's vocabulary: GPT-2 ids are 0..50256"),
    (dict(prompt_ids=[1.5]), r"prompt_ids must be a list of integer token ids, got \[1.5\]"),
    (dict(prompt_ids="Once upon a"), r"prompt_ids must be token ids, got text: encode it first"),
    (dict(seed=10 ** 30), r"seed must be an integer in 0..2\*\*63-1"),
])
def test_generation_refuses_what_it_cannot_do(tiny_lstm, kwargs, message):
    args = dict(prompt_ids=[15496, 995], max_new_tokens=3) | kwargs
    with pytest.raises(ValueError, match=f"^{message}"):
        generate_tokens(tiny_lstm, **args)


def test_a_raw_model_takes_ids_below_its_own_vocab_size(tiny_lstm):
    raw = build_model("lstm_seq", TrainConfig.quick(embed_size=8), 100)
    assert len(generate_tokens(raw, [99], 2)) == 2
    with pytest.raises(ValueError, match=r"prompt id 100 .*: this raw model has ids 0..99 \(wrap it with corpus.wrap"):
        generate_tokens(raw, [100], 2)
    assert generate_tokens(tiny_lstm, torch.tensor([15496, 995]), 2) == generate_tokens(tiny_lstm, [15496, 995], 2)
    assert generate_tokens(tiny_lstm, [15496], 0) == []


# --- misleading messages ---

@pytest.mark.parametrize("flag", ["--input_files", "--tinystories_valid_path"])
def test_a_fifo_is_not_a_regular_file(capsys, tmp_path, flag):
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    line = refused(capsys, tmp_path, flag, str(fifo))
    assert f"{fifo} is not a regular file (a FIFO, socket or device)" in line and "not found" not in line, line


def test_a_huge_seed_is_refused_and_the_largest_one_works(capsys, tmp_path):
    line = refused(capsys, tmp_path, "--seed", str(10 ** 30))
    assert "seed must be an integer in 0..2**63-1, got 1000000000000000000000000000000" in line, line
    with pytest.raises(ValueError, match=r"seed must be an integer in 0..2\*\*63-1"):
        TrainConfig(seed=10 ** 30)
    largest = TrainConfig.quick(seed=2 ** 63 - 1)
    batches = list(iterate_batches([[1, 2], [3, 4, 5]], 1, seed=largest.seed, epoch=3))  # seed * 100003 + epoch
    assert len(batches) == 2


def test_a_run_name_with_a_null_byte_says_so(tmp_path):
    from pico_helpers.training import train

    cfg = TrainConfig.quick(input_files=[THREESEQS], embed_size=8, output_dir=str(tmp_path))
    corpus = load_corpus(cfg)
    with pytest.raises(ValueError, match=r"run name 'lstm\\x00' contains a control character \(a null byte"):
        train(build_model("lstm_seq", cfg, corpus.vocab), corpus, cfg, name="lstm\0", verbose=False)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="a folder name holds at most 255"):
        check_run_name("x" * 300)
    with pytest.raises(ValueError, match="output_dir contains a null byte"):
        TrainConfig.quick(output_dir="runs\0")


@pytest.fixture
def truncated_rank_file(tmp_path, monkeypatch):
    """pico_helpers/assets/gpt2.tiktoken cut short, nothing else to fall back on, and no network."""
    import tiktoken.load

    import pico_helpers.data.tokenizer as tok

    good = tok.rank_file_path()
    if good is None:
        pytest.skip("needs the verified rank file that make setup provisions")
    data = good.read_bytes()
    asset = tmp_path / "assets" / "gpt2.tiktoken"
    asset.parent.mkdir()
    asset.write_bytes(data[:1000])
    monkeypatch.setattr(tok, "_PACKAGE_ASSET", asset)
    monkeypatch.delenv("PICO_GPT2_TIKTOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.cache/pico-llm copy
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))

    def no_network(*a, **k):
        raise ConnectionError("no network in this test")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    tok.get_tokenizer.cache_clear()
    yield tok, asset, data
    tok.get_tokenizer.cache_clear()


def test_a_truncated_tokenizer_file_says_to_delete_it_or_provision(capsys, tmp_path, truncated_rank_file):
    line = refused(capsys, tmp_path)
    _, asset, _ = truncated_rank_file
    assert f"GPT-2's rank file {asset} is damaged (1,000 bytes, sha256 mismatch; truncated?): delete it and run make " \
           "setup, or run python -m tools.provision_tokenizer, which fetches it again" in line, line


def test_provisioning_replaces_a_damaged_rank_file(tmp_path, monkeypatch, capsys, truncated_rank_file):
    tok, asset, data = truncated_rank_file

    def fake_pip_download(cmd, **kwargs):  # PyPI's sdist, with the file where whisper keeps it
        folder = cmd[cmd.index("-d") + 1]
        with tarfile.open(os.path.join(folder, "openai_whisper-20250625.tar.gz"), "w:gz") as tar:
            info = tarfile.TarInfo("openai_whisper-20250625/whisper/assets/gpt2.tiktoken")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        return type("Done", (), {"returncode": 0, "stderr": ""})()

    monkeypatch.setattr(tok.subprocess, "run", fake_pip_download)
    tok.provision_rank_file(asset)
    assert asset.read_bytes() == data and tok.rank_file_path() == asset
    assert "is damaged (1,000 bytes, sha256 mismatch); fetching it again" in capsys.readouterr().out


# --- silent ---

@pytest.fixture(scope="module")
def word_list(tmp_path_factory, enc):
    """400 distinct words, one GPT-2 token each, one per line: no line has a next-token pair."""
    words = [w for w in (enc.decode([i]) for i in range(3000, 6000)) if w.isalpha() and
             len(enc.encode_ordinary(w)) == 1][:400]
    assert len(words) == 400
    path = tmp_path_factory.mktemp("words") / "words.txt"
    path.write_text("\n".join(words) + "\n")
    return path


def test_a_word_list_is_refused_with_what_to_do(capsys, tmp_path, word_list):
    line = refused(capsys, tmp_path, "--input_files", str(word_list))
    assert "no training line of words.txt (400 lines) has 2 or more tokens" in line, line
    assert "join the words into longer lines" in line


def test_validation_lines_of_one_token_are_refused(tmp_path, tinystories_file):
    valid = tmp_path / "valid.txt"
    valid.write_text("".join(f"{w}\n<|endoftext|>\n" for w in ("cat", "dog", "sun")))
    cfg = TrainConfig.quick(input_files=[], tinystories_weight=1.0, tinystories_path=str(tinystories_file),
                            tinystories_stories=30, tinystories_valid_path=str(valid))
    with pytest.raises(ValueError, match=r"no validation line of .* has 2 or more tokens \(3 held out, one token each\)"
                                         r".*test_fraction=0"):
        load_corpus(cfg)


def test_zero_epochs_are_refused(capsys, tmp_path):
    assert "epochs must be an integer >= 1, got 0 (for example epochs=3)" in refused(capsys, tmp_path, "--epochs", "0")


def test_a_trillion_new_tokens_are_refused_before_training(capsys, tmp_path):
    line = refused(capsys, tmp_path, "--new_tokens", "1000000000000")
    assert "--new_tokens must be an integer >= 1 and at most 100,000, got 1000000000000" in line, line


def test_a_missing_validation_file_is_named_even_when_tinystories_is_off(capsys, tmp_path):
    missing = tmp_path / "TinyStories-valid.txt"
    line = refused(capsys, tmp_path, "--tinystories_valid_path", str(missing))
    assert f"tinystories_valid_path (a TinyStories text file) {missing} not found" in line, line


def test_an_empty_output_dir_is_refused(capsys, tmp_path):
    line = refused(capsys, tmp_path, "--output_dir", "")
    assert "output_dir must be a string naming a folder (not empty), got ''" in line, line
    assert not any(ROOT.glob("lstm_seq"))  # nothing written into the current folder


# --- Ctrl-C ---

@pytest.mark.parametrize("message, line", [
    ("checkpoint saved at epoch 2, step 14: the same command continues",
     "interrupted: checkpoint saved at epoch 2, step 14: the same command continues"),
    ("", "interrupted before training started: nothing was saved; the same command starts again"),
])
def test_ctrl_c_says_what_was_saved(capsys, monkeypatch, message, line):
    def interrupted(args):
        raise KeyboardInterrupt(message) if message else KeyboardInterrupt

    monkeypatch.setattr(pico, "run", interrupted)
    assert pico.main([]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [line]


def test_ctrl_c_after_a_finished_model_does_not_say_nothing_was_saved(capsys, tmp_path, monkeypatch):
    import pico_helpers.training

    monkeypatch.setattr(pico_helpers.training, "train", lambda *a, **k: None)  # trained and saved
    monkeypatch.setattr(pico, "final_samples", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    out = tmp_path / "runs"
    assert pico.main([*QUICK, "--embed_size", "8", "--output_dir", str(out)]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        f"interrupted: lstm_seq trained and saved in {out}/; the same command loads it and goes on"]
