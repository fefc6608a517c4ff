"""Everything train() does before and around the loop, apart from it: the argument checks, the device and
precision, resume or a new History, the hooks and the save function. The workbook's machinery: training/loop.py
and runs/distributed.py call it."""
from __future__ import annotations

import time

import torch

from pico_helpers.config import TrainConfig
from pico_helpers.data import Corpus
from pico_helpers.models import count_parameters
from pico_helpers.runs.store import RunStore, open_run, run_identity
from pico_helpers.training.callbacks import LossPlot, ProgressBar, ProgressLog, TextSamples
from pico_helpers.training.history import History
from pico_helpers.training.setup import make_optimizer, pick_device, steps_per_epoch, use_bf16

__all__ = ["check_arguments", "prepare_run", "run_hooks", "store_saver"]


def check_arguments(model, corpus, config) -> None:
    """ValueErrors that say what train() needs, before anything is loaded or written."""
    from pico_helpers.data.vocab import CorpusVocabModel

    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}: e.g. TrainConfig.quick(), or "
                         "TrainConfig(**values) for a dict of values")
    if not isinstance(corpus, Corpus):
        raise ValueError(f"corpus must be a Corpus, got {type(corpus).__name__}: load one with load_corpus(config)")
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch module, got {type(model).__name__}: build one with "
                         "build_model(name, config, corpus.vocab)")
    wrapped = isinstance(model, CorpusVocabModel)
    if (corpus.vocab is None and wrapped) or (corpus.vocab is not None and (
            not wrapped or model.vocab.ids != corpus.vocab.ids)):
        raise ValueError("the model was built for another vocabulary than this corpus's: build it with "
                         "build_model(name, config, corpus.vocab) (or wrap a model of corpus.vocab_size outputs with "
                         "corpus.wrap(model))")


def run_hooks(store: RunStore, corpus: Corpus, config: TrainConfig, live: bool, say, callbacks=()) -> list:
    """train()'s callbacks: the loss plot, the progress (a bar in Jupyter, the starter's lines elsewhere), the text
    samples, then ``callbacks``."""
    steps = steps_per_epoch(corpus, config)
    progress = ProgressBar(config.epochs * steps, config.time_budget_s) if live else ProgressLog(config.log_every,
                                                                                               steps, say)
    return [LossPlot(store, live=live), progress, TextSamples(corpus.enc, config.prompt, config.sample_every_s, say),
            *callbacks]


def store_saver(store: RunStore, model, optimizer, config: TrainConfig, history: History):
    """The ``save()`` fit calls: the run's checkpoint and history.json, with the wall time so far."""
    wall0, wall_before = time.perf_counter(), history.wall_time_s

    def save() -> None:
        history.wall_time_s = wall_before + time.perf_counter() - wall0
        store.save(model, optimizer, config, history)

    return save


def prepare_run(model, corpus: Corpus, config: TrainConfig, name: str, store: RunStore | None, resume: bool = True,
                verbose: bool = True, say=print):
    """(config with its bf16 resolved, the optimizer, the History) of a run: the earlier run's in ``store`` with the
    same run id (its weights and Adam state loaded), else a new History (always one when ``store`` is None)."""
    device = pick_device(config.device_id, verbose=verbose)
    config = config.replace(bf16=use_bf16(config, device))
    optimizer = make_optimizer(model.to(device), config.learning_rate)
    run_id = run_identity(config, corpus, model)
    history = open_run(store, run_id, model, optimizer, config, resume, say) if store else None
    if history is None:
        history = History(model=name, data=corpus.description, run_id=run_id, n_params=count_parameters(model),
                          vocab_size=corpus.vocab_size)
        say(f"[{name}] {history.n_params:,} parameters on {device} ({'bf16 autocast' if config.bf16 else 'float32'}"
            f"); data: {corpus.description}")
    history.config, history.device, history.bf16 = config.to_dict(), str(device), config.bf16
    return config, optimizer, history
