"""Inspection helpers: neighbours, k-means, PCA, the monosemantic annotation, plots and headless widgets."""
import math

import matplotlib

matplotlib.use("Agg")  # no display in tests; set before pyplot is imported anywhere

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from pico_helpers.analysis import (  # noqa: E402
    annotate_tokens, attention_maps, attention_viewer, describe_neighbours, embedding_inspector,
    embedding_table, kmeans, nearest_neighbours, nearest_to_vector, number_words, pca_2d, plot_attention,
    plot_embedding_scatter, token_structure_plot,
)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


class CharEnc:
    """A toy tokenizer: one token per character of ALPHABET (id = position), for exact expectations."""

    ALPHABET = "abcdefghij .\n"

    def encode_ordinary(self, text):
        return [self.ALPHABET.index(c) for c in text]

    def decode(self, ids):
        return "".join(self.ALPHABET[int(i)] for i in ids)


def hand_table():
    """Five 2-D vectors at known angles from token 0 (along x): 0, 10, 45, 90 and 180 degrees."""
    angles = [0.0, 10.0, 45.0, 90.0, 180.0]
    lengths = [1.0, 3.0, 0.5, 2.0, 1.0]  # lengths must not matter for cosine similarity
    return torch.tensor([[r * math.cos(math.radians(a)), r * math.sin(math.radians(a))]
                         for a, r in zip(angles, lengths)])


# --- neighbours ---

def test_nearest_neighbours_rank_by_cosine():
    table = hand_table()
    ids, scores = nearest_neighbours(table, 0, k=4)
    assert ids.tolist() == [1, 2, 3, 4]
    expected = [math.cos(math.radians(a)) for a in (10, 45, 90, 180)]
    torch.testing.assert_close(scores, torch.tensor(expected), rtol=0, atol=1e-6)  # float32 cosines
    ids, _ = nearest_neighbours(table, 0, k=2, exclude_self=False)
    assert ids.tolist() == [0, 1]
    assert ids.dtype == torch.long and scores.dtype == torch.float32


def test_nearest_to_vector_and_ties_by_id():
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    ids, scores = nearest_to_vector(table, torch.tensor([5.0, 0.0]), k=3)
    assert ids.tolist() == [0, 2, 4]  # 0 and 2 tie at cosine 1: lower id first
    ids, _ = nearest_to_vector(table, torch.tensor([5.0, 0.0]), k=2, exclude=[0])
    assert ids.tolist() == [2, 4]


def test_neighbour_errors_teach():
    table = hand_table()
    with pytest.raises(ValueError, match=r"token_id 5 is out of range for a table of 5 tokens \(valid ids: 0..4\)"):
        nearest_neighbours(table, 5)
    with pytest.raises(ValueError, match="out of range"):
        nearest_neighbours(table, -1)
    with pytest.raises(ValueError, match=r"k must be an int in 1..4"):
        nearest_neighbours(table, 0, k=5)
    with pytest.raises(ValueError, match=r"vector must have shape \(2,\)"):
        nearest_to_vector(table, torch.zeros(3))


def test_embedding_table_uses_the_model_contract():
    from pico_helpers.models import LSTMSeqModel

    model = LSTMSeqModel(vocab_size=30, embed_size=8, hidden_size=8)
    table = embedding_table(model)
    assert table.shape == (30, 8) and table.dtype == torch.float32 and not table.requires_grad
    assert torch.equal(table, model.embedding.weight.detach())


# --- k-means and PCA ---

def blobs(seed=0):
    """Three tight, far-apart clusters of 40 points in 5-D, in shuffled order."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[10.0, 0, 0, 0, 0], [0, 10.0, 0, 0, 0], [0, 0, -10.0, 0, 0]])
    truth = torch.arange(3).repeat_interleave(40)
    points = centres[truth] + 0.3 * torch.randn(120, 5, generator=gen)
    perm = torch.randperm(120, generator=gen)
    return points[perm], truth[perm], centres


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_kmeans_recovers_separated_clusters(metric):
    points, truth, centres = blobs()
    labels, centroids = kmeans(points, 3, seed=0, metric=metric)
    assert labels.shape == (120,) and centroids.shape == (3, 5)
    # The same partition up to renaming: each found cluster is exactly one true cluster.
    pairs = set(zip(labels.tolist(), truth.tolist()))
    assert len(pairs) == 3 and len({a for a, _ in pairs}) == 3
    if metric == "euclidean":
        for found, true in pairs:
            assert torch.dist(centroids[found], centres[true]) < 0.3  # 40 points of noise 0.3: mean is close
    else:
        torch.testing.assert_close(centroids.norm(dim=1), torch.ones(3))  # spherical centres
    again, _ = kmeans(points, 3, seed=0, metric=metric)
    assert torch.equal(labels, again), "a fixed seed must give the same labels"


def test_kmeans_handles_more_clusters_than_distinct_points():
    points = torch.tensor([[0.0, 0.0]] * 4 + [[5.0, 5.0]] * 4)
    labels, centroids = kmeans(points, 3, seed=1)
    assert sorted(torch.bincount(labels, minlength=3).tolist()) == [1, 3, 4]  # no cluster left empty
    assert torch.equal(labels, kmeans(points, 3, seed=1)[0])
    with pytest.raises(ValueError, match=r"n_clusters must be an int in 1..8"):
        kmeans(points, 9)
    with pytest.raises(ValueError, match="metric must be"):
        kmeans(points, 2, metric="manhattan")


def test_pca_finds_the_known_principal_axis():
    gen = torch.Generator().manual_seed(0)
    axis = torch.tensor([3.0, 4.0, 0.0, 0.0]) / 5.0
    along = torch.linspace(-10, 10, 200)
    data = along[:, None] * axis + 0.05 * torch.randn(200, 4, generator=gen) + torch.tensor([1.0, 2.0, 3.0, 4.0])
    xy = pca_2d(data)
    assert xy.shape == (200, 2) and xy.dtype == torch.float32
    # The first coordinate is the position along the axis (sign: the largest loading, 0.8, positive).
    # Noise of std 0.05 per coordinate: the largest of 200 deviations is ~0.15, plus a slight tilt of the
    # fitted axis times |along| <= 10, so 0.3 is loose; a wrong axis or sign would be off by up to 20.
    torch.testing.assert_close(xy[:, 0], along - along.mean(), rtol=0, atol=0.3)
    assert xy[:, 1].abs().max() < 0.3
    assert torch.equal(pca_2d(data), xy)


@pytest.mark.parametrize("shape", [(60, 7), (6, 40)])  # more points than dimensions, and fewer
def test_pca_matches_an_svd_reference(shape):
    data = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    centred = data - data.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    axes = vh[:2]
    axes = axes * torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    # float64 eigh versus float64 SVD, returned as float32: agreement to float32 rounding.
    torch.testing.assert_close(pca_2d(data.float()), (centred @ axes.T).float(), rtol=1e-4, atol=1e-4)


def test_pca_degenerate_inputs_give_zero_columns():
    assert torch.equal(pca_2d(torch.ones(4, 3)), torch.zeros(4, 2))  # no variance at all
    assert torch.equal(pca_2d(torch.ones(1, 3)), torch.zeros(1, 2))
    two = pca_2d(torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 4.0]]))  # one axis only
    torch.testing.assert_close(two, torch.tensor([[-2.5, 0.0], [2.5, 0.0]]))


def test_pca_sign_convention_is_stable_under_negation_of_the_data():
    data = torch.randn(50, 6, generator=torch.Generator().manual_seed(1))
    # -data has the same principal axes; with the "largest loading positive" rule the projections flip.
    torch.testing.assert_close(pca_2d(-data), -pca_2d(data), rtol=0, atol=1e-5)
    torch.testing.assert_close(pca_2d(data[:4]), pca_2d(data[:4].clone()))


# --- monosemantic annotation ---

def test_annotate_tokens_format():
    table = hand_table()
    names = ["zero", "ten", "forty-five", "ninety", "half turn"]
    text = annotate_tokens([0, 3], table, lambda i: names[i], k=2)
    # Token 0 (0 degrees): 10 then 45 degrees. Token 3 (90): 45 (cos .71) then 10 (cos .17).
    assert text == "zero[NN=['ten','forty-five']]ninety[NN=['forty-five','ten']]"
    assert annotate_tokens([], table, str) == ""
    newline = annotate_tokens([1], table, lambda i: "\n" if i == 0 else "x", k=1)
    assert newline == "x[NN=['\\n']]"  # neighbours shown with repr: invisible characters become visible


# --- plots ---

def test_plot_attention_labels_and_title():
    attn = torch.rand(2, 3, 4, 4)
    tokens = ["Once", " upon", " a", "\n"]
    ax = plot_attention(attn, tokens, layer=1, head=2)
    assert ax.get_title() == "layer 1, head 2"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Once", " upon", " a", "\\n"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Once", " upon", " a", "\\n"]
    image = ax.get_images()[0]
    assert torch.equal(torch.as_tensor(image.get_array().data), attn[1, 2])
    assert len(ax.figure.axes) == 2  # the heatmap and its colorbar
    with pytest.raises(ValueError, match=r"head must be in 0..2, got 3"):
        plot_attention(attn, tokens, layer=0, head=3)


def test_plot_embedding_scatter_annotates_each_token():
    table = hand_table()
    ax = plot_embedding_scatter(table, [0, 1, 3], ["zero", "ten", "ninety"], highlight=[0])
    assert sorted(t.get_text() for t in ax.texts) == ["ninety", "ten", "zero"]
    assert "PCA" in ax.get_title()
    with pytest.raises(ValueError, match="one label per token"):
        plot_embedding_scatter(table, [0, 1], ["only one"])


def test_token_structure_plot_with_multi_token_words():
    table = torch.randn(len(CharEnc.ALPHABET), 6, generator=torch.Generator().manual_seed(0))
    fig, ax = plt.subplots()
    with pytest.warns(UserWarning, match="several tokens"):
        out = token_structure_plot(table, CharEnc(), ["a", "b", "cd", "e"], ax=ax)
    assert out is ax
    assert [t.get_text() for t in ax.texts] == ["a", "b", "c", "e"]  # "cd" shown by its first token
    assert number_words(0, 3) == [" 0", " 1", " 2", " 3"]


# --- attention maps from a model ---

class FakeAttentionModel(nn.Module):
    """Returns a known attention tensor (uniform causal weights, shifted by a per-head constant)."""

    block_size = 16

    def __init__(self, n_layers=2, n_heads=3, vocab=13):
        super().__init__()
        self.n_layers, self.n_heads, self.vocab_size = n_layers, n_heads, vocab
        self.dummy = nn.Parameter(torch.zeros(1))
        self.seen = None

    @staticmethod
    def known(n_layers, n_heads, T):
        causal = torch.tril(torch.ones(T, T))
        weights = causal / causal.sum(-1, keepdim=True)  # (T, T)
        scale = torch.arange(n_layers * n_heads, dtype=torch.float32).view(n_layers, 1, n_heads, 1, 1)
        return weights + 0.001 * scale  # (L, 1, H, T, T), a different map for every head

    def forward(self, idx, return_attention=False):
        T, B = idx.shape
        self.seen = (idx.clone(), self.training)
        logits = torch.zeros(T, B, self.vocab_size)
        if not return_attention:
            return logits
        return logits, self.known(self.n_layers, self.n_heads, T).expand(-1, B, -1, -1, -1)


def test_attention_maps_shapes_tokens_and_mode():
    model = FakeAttentionModel().train()
    attn, tokens = attention_maps(model, CharEnc(), "abc d")
    assert attn.shape == (2, 3, 5, 5)
    assert torch.equal(attn, FakeAttentionModel.known(2, 3, 5)[:, 0])
    assert tokens == ["a", "b", "c", " ", "d"]
    idx, was_training = model.seen
    assert idx.tolist() == [[0], [1], [2], [10], [3]] and was_training is False  # ran in eval mode
    assert model.training, "the model's mode must be restored"
    with pytest.raises(ValueError, match="block_size is 16"):
        attention_maps(model, CharEnc(), "a" * 17)
    with pytest.raises(ValueError, match="empty"):
        attention_maps(model, CharEnc(), "")


# --- widgets, driven without a browser ---

def test_embedding_inspector_updates_headless():
    from pico_helpers.models import LSTMSeqModel

    torch.manual_seed(0)
    enc = CharEnc()
    models = {"lstm": LSTMSeqModel(len(enc.ALPHABET), 6, 6), "other": LSTMSeqModel(len(enc.ALPHABET), 4, 4)}
    widget = embedding_inspector(models, enc, default_word="b", k=3)
    view = widget.view
    expected = describe_neighbours(embedding_table(models["lstm"]), enc, "b", 3)
    assert view.last_text == expected["text"] and "'b' is token id 1" in view.last_text
    assert view.last_figure is not None and view.last_figure.axes[0].texts
    view.word.value = "7"  # digits: a token id
    assert view.last_text.startswith("token id 7 = 'h'")
    assert len(view.last_text.splitlines()) == 2 + 3
    view.k.value = 5
    assert len(view.last_text.splitlines()) == 2 + 5
    view.word.value = "cd"  # two tokens: the first is used, and the note says so
    assert "is 2 tokens ['c', 'd']; using the first, 'c'" in view.last_text
    view.model.value = "other"
    expected = describe_neighbours(embedding_table(models["other"]), enc, "cd", 5)
    assert view.last_text == expected["text"]
    view.word.value = "99"
    assert "out of range" in view.last_text and view.last_figure is None  # error shown, not raised
    # The default preset is the numbers " 0".." 100": CharEnc has no digits, so the tab shows its error.
    assert view.structure.last_figure is None and "substring not found" in view.structure.last_text
    view.preset.value = "custom (below, separated by |)"
    view.custom.value = "a|b|cd|e"
    assert view.structure.last_figure is not None
    assert "several tokens" in view.structure.last_text


def test_attention_viewer_updates_headless():
    widget = attention_viewer(FakeAttentionModel(), CharEnc(), "abc")
    view = widget.view
    assert (view.layer.max, view.head.max) == (1, 2)
    view.layer.value, view.head.value = 1, 2
    ax = view.last_figure.axes[0]
    assert ax.get_title() == "layer 1, head 2"
    view.prompt.value = "ab cd"
    assert [t.get_text() for t in view.last_figure.axes[0].get_xticklabels()] == ["a", "b", " ", "c", "d"]


def test_attention_maps_of_the_real_transformer():
    # The attention rows of a causal model are distributions over the keys up to the query.
    transformer = pytest.importorskip("pico_helpers.models.transformer")
    torch.manual_seed(0)
    model = transformer.TransformerModel(len(CharEnc.ALPHABET), 16, 2, 2, 8)
    attn, tokens = attention_maps(model, CharEnc(), "abcde")
    assert attn.shape == (2, 2, 5, 5) and tokens == list("abcde")
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 5))  # float32 softmax rows sum to 1
    assert torch.all(attn.triu(diagonal=1) == 0), "a query must not attend to later tokens"


def test_tokens_without_a_row_get_one_line_not_a_table():
    # A corpus-vocabulary model has rows only for the ids its training data held: the others are zero rows.
    from pico_helpers.data.vocab import CorpusVocab, CorpusVocabModel
    from pico_helpers.models import LSTMSeqModel

    torch.manual_seed(0)
    enc = CharEnc()
    vocab = CorpusVocab([0, 1, 2, 3, 4], base_size=len(enc.ALPHABET))  # 'a'..'e' seen in training; 'f'.. never
    model = CorpusVocabModel(LSTMSeqModel(vocab.n_vocab, 6, 6), vocab)
    table = embedding_table(model)
    assert table[vocab.ids].abs().sum(1).gt(0).all() and table[5:].abs().sum() == 0
    with pytest.raises(ValueError, match=r"'g' \(id 6\) has no embedding row: the model never saw this token"):
        describe_neighbours(table, enc, "g", 3)
    info = describe_neighbours(table, enc, "b", 8)  # only 4 other tokens have a row: no zero row is a neighbour
    assert sorted(info["ids"]) == [0, 2, 3, 4]
    view = embedding_inspector({"tiny": model}, enc, default_word="g", k=3).view
    assert view.last_text.startswith("tiny: 'g' (id 6) has no embedding row") and view.last_figure is None
    view.preset.value = "custom (below, separated by |)"
    view.custom.value = "a|b|g|c|h"  # two of five have no row: drawn without them, and the panel says so
    assert view.structure.last_figure is not None
    assert view.structure.last_text.startswith("tiny: 2 of 5 tokens have no embedding row")
    view.custom.value = "a|g|h"
    assert view.structure.last_figure is None and "choose tokens from its data" in view.structure.last_text
