"""Looking inside trained models: loss plots, the loss at each position, embedding neighbours and clusters,
attention maps, sparse autoencoders and their feature browser, widgets; comparing variants over paired seeds."""
from __future__ import annotations

from pico_helpers.analysis.attention import attention_maps, attention_weights
from pico_helpers.analysis.coherence import (Sample, SettingRow, Summary, distinct_n, grid_table, measure_grid,
                                             plot_tradeoff, repetition, sample_grid, score_samples, setting_label,
                                             story_openings, summarise)
from pico_helpers.analysis.feature_browser import FeatureBrowser, FeatureIndex, feature_browser
from pico_helpers.analysis.embeddings import (annotate_tokens, describe_neighbours, embedding_table, kmeans,
                                              nearest_neighbours, nearest_to_vector, number_words, pca_2d)
from pico_helpers.analysis.heads import (head_scores, head_type, heads_table, scores_from_weights,
                                         story_windows)
from pico_helpers.analysis.figures import plot_attention, plot_embedding_scatter, token_structure_plot
from pico_helpers.analysis.plots import LiveLossPlot, label_axes, plot_histories, plot_history
from pico_helpers.analysis.positions import position_losses, sequence_losses
from pico_helpers.analysis.sae import (SparseAutoencoder, collect_activations, feature_purity, loss_recovered,
                                       sae_metrics, top_activations, train_sae)
from pico_helpers.analysis.sae_runs import SAEConfig, SAERun, load_sae, saved_sae, trained_sae
from pico_helpers.analysis.seeds import Paired, SeedStudy, over_seeds, paired_difference, run_names
from pico_helpers.analysis.timings import Timing, machine, speedup, time_repeats, timing
from pico_helpers.analysis.sae_stories import (StoryActivations, annotate_features, held_out_loss_recovered,
                                               sae_features, story_activations)
from pico_helpers.analysis.widgets import AttentionViewer, EmbeddingInspector, attention_viewer, embedding_inspector

__all__ = ["LiveLossPlot", "label_axes", "plot_histories", "plot_history", "annotate_tokens", "attention_maps", "attention_viewer",
           "describe_neighbours", "embedding_inspector", "embedding_table", "kmeans", "nearest_neighbours",
           "nearest_to_vector", "number_words", "pca_2d", "plot_attention", "plot_embedding_scatter",
           "token_structure_plot", "AttentionViewer", "EmbeddingInspector", "position_losses", "sequence_losses",
           # sparse autoencoders (07_monosemanticity)
           "SparseAutoencoder", "collect_activations", "feature_purity", "loss_recovered", "sae_metrics",
           "top_activations", "train_sae", "SAEConfig", "SAERun", "StoryActivations", "annotate_features",
           "held_out_loss_recovered", "load_sae", "sae_features", "saved_sae", "story_activations", "trained_sae",
           "FeatureBrowser", "FeatureIndex", "feature_browser",
           # paired seeds and timings with spreads (02_kgram_mlp, 04_transformer, 06_experiments)
           "Paired", "SeedStudy", "over_seeds", "paired_difference", "run_names", "Timing", "machine", "speedup", "time_repeats", "timing",
           # samples measured (05_sampling) and attention heads scored (06_experiments, E5)
           "Sample", "SettingRow", "Summary", "distinct_n", "grid_table", "measure_grid", "plot_tradeoff", "repetition",
           "sample_grid", "score_samples", "setting_label", "story_openings", "summarise", "attention_weights",
           "head_scores", "head_type", "heads_table", "scores_from_weights", "story_windows"]
