"""Looking inside trained models: loss plots, embedding neighbours and clusters, attention maps, widgets."""
from __future__ import annotations

from pico_helpers.analysis.attention import attention_maps
from pico_helpers.analysis.embeddings import (annotate_tokens, describe_neighbours, embedding_table, kmeans,
                                              nearest_neighbours, nearest_to_vector, number_words, pca_2d)
from pico_helpers.analysis.figures import plot_attention, plot_embedding_scatter, token_structure_plot
from pico_helpers.analysis.plots import LiveLossPlot, plot_histories, plot_history
from pico_helpers.analysis.widgets import AttentionViewer, EmbeddingInspector, attention_viewer, embedding_inspector

__all__ = ["LiveLossPlot", "plot_histories", "plot_history", "annotate_tokens", "attention_maps", "attention_viewer",
           "describe_neighbours", "embedding_inspector", "embedding_table", "kmeans", "nearest_neighbours",
           "nearest_to_vector", "number_words", "pca_2d", "plot_attention", "plot_embedding_scatter",
           "token_structure_plot", "AttentionViewer", "EmbeddingInspector"]
