"""pico-llm workbook helpers, one subpackage per job: data, models, training, sample, analysis; runs and workbook
hold the machinery around them (run folders, torchrun, notebook display).

Every notebook imports from here, e.g. ``from pico_helpers import TrainConfig, train``; importing has no side effects.
"""
from pico_helpers.analysis import (FeatureBrowser, FeatureIndex, LiveLossPlot, SAEConfig, SAERun,
                                   SparseAutoencoder, StoryActivations, annotate_features, annotate_tokens,
                                   attention_maps, attention_viewer, attention_weights, collect_activations,
                                   describe_neighbours,
                                   embedding_inspector, embedding_table, feature_browser, feature_purity,
                                   held_out_loss_recovered, kmeans, label_axes, load_sae, loss_recovered, nearest_neighbours,
                                   nearest_to_vector, number_words, pca_2d, plot_attention, plot_embedding_scatter,
                                   plot_histories, plot_history, position_losses, sae_features, sae_metrics,
                                   saved_sae, sequence_losses, story_activations, token_structure_plot,
                                   top_activations, train_sae, trained_sae)
from pico_helpers.analysis.seeds import Paired, SeedStudy, over_seeds, paired_difference, run_names
from pico_helpers.analysis.timings import Timing, machine, speedup, time_repeats, timing
from pico_helpers.analysis.coherence import (Sample, SettingRow, Summary, distinct_n, grid_table, measure_grid,
                                             plot_tradeoff, repetition, sample_grid, score_samples, setting_label,
                                             story_openings, summarise)
from pico_helpers.analysis.heads import (head_scores, head_type, heads_table, scores_from_weights,
                                         story_windows)
from pico_helpers.config import MODEL_NAMES, TrainConfig, find_repo_root, quick_mode
from pico_helpers.data import (Corpus, CorpusVocab, CorpusVocabModel, MixedSequenceDataset, collate, generate_3seqs,
                               get_tokenizer, iterate_batches, load_corpus, load_text_file, load_tinystories,
                               split_train_val, write_3seqs)
from pico_helpers.models import (KGramMLPSeqModel, LSTMSeqModel, RMSNorm, TransformerModel, build_model,
                                 count_parameters)
from pico_helpers.presets import COMPARE_MODELS, preset, runs_root, tinystories_source, trained_transformer
from pico_helpers.runs import RunStore, load_checkpoint, run_identity
from pico_helpers.sample import generate_text, generate_tokens, nucleus_probs, nucleus_probs_topk, nucleus_sampling
from pico_helpers.training import (Callback, History, compute_next_token_loss, evaluate, fused_linear_cross_entropy,
                                   make_optimizer, next_token_loss, pick_device, train, train_epoch, train_step)
from pico_helpers.workbook import (cell_text, continues_count, epoch_table, md_table, result_row,
                                   sample_table, show_source, start_notebook)

__all__ = [
    # analysis
    "LiveLossPlot", "annotate_tokens", "label_axes", "attention_maps", "attention_viewer", "describe_neighbours",
    "embedding_inspector", "embedding_table", "kmeans", "nearest_neighbours", "nearest_to_vector", "number_words",
    "pca_2d", "plot_attention", "plot_embedding_scatter", "plot_histories", "plot_history", "position_losses",
    "sequence_losses", "token_structure_plot",
    # analysis: sparse autoencoders and the feature browser (07_monosemanticity)
    "SparseAutoencoder", "collect_activations", "feature_purity", "loss_recovered", "sae_metrics", "top_activations",
    "train_sae", "SAEConfig", "SAERun", "StoryActivations", "annotate_features", "held_out_loss_recovered",
    "load_sae", "sae_features", "saved_sae", "story_activations", "trained_sae", "FeatureBrowser", "FeatureIndex",
    "feature_browser",
    # analysis: paired seeds and timings with spreads (02_kgram_mlp, 04_transformer, 06_experiments)
    "Paired", "SeedStudy", "over_seeds", "paired_difference", "run_names", "Timing", "machine", "speedup", "time_repeats", "timing",
    # analysis: samples measured (05_sampling) and attention heads scored (06_experiments, E5)
    "Sample", "SettingRow", "Summary", "distinct_n", "grid_table", "measure_grid", "plot_tradeoff", "repetition",
    "sample_grid", "score_samples", "setting_label", "story_openings", "summarise", "attention_weights", "head_scores",
    "head_type", "heads_table", "scores_from_weights", "story_windows",
    # config
    "MODEL_NAMES", "TrainConfig", "find_repo_root", "quick_mode",
    # data
    "Corpus", "CorpusVocab", "CorpusVocabModel", "MixedSequenceDataset", "collate", "generate_3seqs",
    "get_tokenizer", "iterate_batches", "load_corpus", "load_text_file", "load_tinystories", "split_train_val",
    "write_3seqs",
    # models
    "KGramMLPSeqModel", "LSTMSeqModel", "RMSNorm", "TransformerModel", "build_model", "count_parameters",
    # presets
    "COMPARE_MODELS", "preset", "runs_root", "tinystories_source", "trained_transformer",
    # runs
    "RunStore", "load_checkpoint", "run_identity",
    # sample
    "generate_text", "generate_tokens", "nucleus_probs", "nucleus_probs_topk", "nucleus_sampling",
    # training
    "Callback", "History", "compute_next_token_loss", "evaluate", "fused_linear_cross_entropy", "make_optimizer",
    "next_token_loss", "pick_device", "train", "train_epoch", "train_step",
    # workbook
    "cell_text", "continues_count", "epoch_table", "md_table", "sample_table", "result_row",
    "show_source", "start_notebook",
]
