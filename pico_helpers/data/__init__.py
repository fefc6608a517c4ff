"""Data for every run: the tokenizer, text sources, corpus vocabulary and corpus (splits, mixture, batches)."""
from __future__ import annotations

from pico_helpers.data.tokenizer import get_tokenizer
from pico_helpers.data.vocab import CorpusVocab, CorpusVocabModel
from pico_helpers.data.sources import generate_3seqs, write_3seqs, load_text_file, load_tinystories, read_tinystories_file
from pico_helpers.data.corpus import Corpus, MixedSequenceDataset, HeldOutSet, collate, iterate_batches, load_corpus, padding_fraction, split_train_val, overlap, drop_seen, PAD_ID

__all__ = ["CorpusVocab", "CorpusVocabModel", "get_tokenizer", "generate_3seqs", "write_3seqs", "load_text_file", "load_tinystories", "read_tinystories_file", "Corpus", "MixedSequenceDataset", "HeldOutSet", "collate", "iterate_batches", "load_corpus", "padding_fraction", "split_train_val", "overlap", "drop_seen", "PAD_ID"]
