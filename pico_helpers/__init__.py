"""pico-llm workbook helpers, one subpackage per job: data, models, train, sample, analysis, workbook.

Every notebook imports from here, e.g. ``from pico_helpers import TrainConfig, train``; importing has no side effects.
"""
from types import ModuleType as _ModuleType

from pico_helpers.analysis import (LiveLossPlot, annotate_tokens, attention_maps, attention_viewer,
                                   describe_neighbours, embedding_inspector, embedding_table, kmeans,
                                   nearest_neighbours, nearest_to_vector, number_words, pca_2d, plot_attention,
                                   plot_embedding_scatter, plot_histories, plot_history, token_structure_plot)
from pico_helpers.config import MODEL_NAMES, TrainConfig, find_repo_root, quick_mode
from pico_helpers.data import (Corpus, CorpusVocab, MixedSequenceDataset, collate, generate_3seqs, get_tokenizer,
                               iterate_batches, load_corpus, load_text_file, load_tinystories, split_train_val,
                               write_3seqs)
from pico_helpers.presets import COMPARE_MODELS, preset, runs_root, tinystories_source, trained_transformer
from pico_helpers.models import (KGramMLPSeqModel, LSTMSeqModel, RMSNorm, TransformerModel, build_model,
                                 count_parameters)
from pico_helpers.sample import generate_text, generate_tokens, nucleus_probs, nucleus_sampling
from pico_helpers.training import (Callback, History, RunStore, compute_next_token_loss, evaluate,
                                fused_linear_cross_entropy, load_checkpoint, make_optimizer, next_token_loss, pick_device,
                                run_identity, train, train_epoch, train_step)
from pico_helpers.workbook import (cell_text, continues_count, epoch_table, export_answers, md_table, median_seconds,
                                   sample_table)
from pico_helpers.workbook.display import result_row, show_source

# The public names are exactly those imported above (not the subpackages themselves).
__all__ = sorted(name for name, value in list(globals().items())
                 if not name.startswith("_") and not isinstance(value, _ModuleType))
