"""Data for every run: the tokenizer, the text sources and the corpus (splits, mixture, batches)."""
from __future__ import annotations

from pico_helpers.data.tokenizer import CompactVocab, get_tokenizer
from pico_helpers.data.sources import generate_3seqs, write_3seqs, load_text_file, load_tinystories, read_tinystories_file
from pico_helpers.data.corpus import Corpus, MixedSequenceDataset, HeldOutSet, collate, iterate_batches, load_corpus, split_train_val, PAD_ID

__all__ = ["CompactVocab", "get_tokenizer", "generate_3seqs", "write_3seqs", "load_text_file", "load_tinystories", "read_tinystories_file", "Corpus", "MixedSequenceDataset", "HeldOutSet", "collate", "iterate_batches", "load_corpus", "split_train_val", "PAD_ID"]
