"""pico-llm workbook helpers: tokenizer, data, models, training, generation, plots, inspection, answers.

Every notebook imports what it needs from here, e.g. ``from pico_helpers import TrainConfig, train``.
Importing has no side effects: nothing is seeded, downloaded or configured until you call it.
"""
from .answers import export_answers
from .config import MODEL_NAMES, TrainConfig, find_repo_root, quick_mode
from .data import (Corpus, MixedSequenceDataset, collate, generate_3seqs, iterate_batches, load_corpus,
                   load_text_file, load_tinystories, split_train_val, write_3seqs)
from .generation import generate_text, generate_tokens
from .inspection import (annotate_tokens, attention_maps, attention_viewer, describe_neighbours,
                         embedding_inspector, embedding_table, kmeans, nearest_neighbours, nearest_to_vector,
                         number_words, pca_2d, plot_attention, plot_embedding_scatter, token_structure_plot)
from .losses import compute_next_token_loss, fused_linear_cross_entropy, next_token_loss
from .models import KGramMLPSeqModel, LSTMSeqModel
from .plots import LiveLossPlot, plot_histories, plot_history
from .sampling import nucleus_probs, nucleus_sampling
from .tokenizer import CompactVocab, get_tokenizer
from .training import build_model, count_parameters, evaluate, load_checkpoint, pick_device, train
from .transformer import RMSNorm, TransformerModel

__all__ = [
    "export_answers",
    "MODEL_NAMES", "TrainConfig", "find_repo_root", "quick_mode",
    "Corpus", "MixedSequenceDataset", "collate", "generate_3seqs", "iterate_batches", "load_corpus",
    "load_text_file", "load_tinystories", "split_train_val", "write_3seqs",
    "generate_text", "generate_tokens",
    "annotate_tokens", "attention_maps", "attention_viewer", "describe_neighbours", "embedding_inspector",
    "embedding_table", "kmeans", "nearest_neighbours", "nearest_to_vector", "number_words", "pca_2d",
    "plot_attention", "plot_embedding_scatter", "token_structure_plot",
    "compute_next_token_loss", "fused_linear_cross_entropy", "next_token_loss",
    "KGramMLPSeqModel", "LSTMSeqModel", "RMSNorm", "TransformerModel",
    "LiveLossPlot", "plot_histories", "plot_history",
    "nucleus_probs", "nucleus_sampling",
    "CompactVocab", "get_tokenizer",
    "build_model", "count_parameters", "evaluate", "load_checkpoint", "pick_device", "train",
]
