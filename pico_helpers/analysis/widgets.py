"""ipywidgets panels with plain-method callbacks: the embedding inspector (01) and the attention viewer (06)."""
from __future__ import annotations

import warnings

from pico_helpers.analysis.attention import attention_maps
from pico_helpers.analysis.embeddings import _token, describe_neighbours, embedding_table, number_words
from pico_helpers.analysis.figures import plot_attention, plot_embedding_scatter, token_structure_plot
from pico_helpers.analysis.plots import bare_figure, in_notebook, png_image

__all__ = ["EmbeddingInspector", "AttentionViewer", "embedding_inspector", "attention_viewer"]

STRUCTURE_PRESETS = {
    "numbers 0..100": number_words(0, 100),
    "numbers 0..20": number_words(0, 20),
    "colours, animals, family": [" red", " blue", " green", " yellow", " cat", " dog", " bird", " fish",
                                 " mom", " dad", " sister", " brother"],
    "custom (below, separated by |)": None,
}


class _View:
    """An Output area and the last text and figure shown in it (what the tests look at)."""

    def __init__(self):
        import ipywidgets as widgets

        self.out, self.last_text, self.last_figure = widgets.Output(), "", None

    def _show(self, text: str, fig=None) -> None:
        self.last_text, self.last_figure = text, fig
        if fig is not None:
            fig.tight_layout()
        if not in_notebook():  # headless (tests, scripts): keep the results, draw nothing
            return
        from IPython.display import display

        self.out.clear_output(wait=True)
        with self.out:
            if text:
                print(text)
            if fig is not None:
                display(png_image(fig, dpi=90, bbox_inches="tight"))


# --- embedding inspector ---

class EmbeddingInspector(_View):
    """The panel behind ``embedding_inspector``; ``show_neighbours`` and ``show_structure`` are its callbacks."""

    def __init__(self, models: dict, enc, default_word: str = " the", k: int = 8):
        import ipywidgets as widgets

        super().__init__()
        if not models:
            raise ValueError("give at least one model, e.g. {'LSTM': lstm_model}")
        self.models, self.enc = dict(models), enc
        self.model = widgets.Dropdown(options=list(self.models), description="model")
        self.word = widgets.Text(value=default_word, description="word or id", continuous_update=True,
                                 placeholder="' the' (leading space matters) or 262")  # updates as you type
        self.k = widgets.IntSlider(value=k, min=1, max=50, description="k")
        self.preset = widgets.Dropdown(options=list(STRUCTURE_PRESETS), description="tokens")
        self.custom = widgets.Text(value=" Monday| Tuesday| Wednesday| Thursday| Friday", description="custom",
                                   continuous_update=False, placeholder="tokens separated by |, then Enter")
        self.structure = _View()  # the second tab's output area
        tabs = widgets.Tab(children=[widgets.VBox([widgets.HBox([self.word, self.k]), self.out]),
                                     widgets.VBox([widgets.HBox([self.preset, self.custom]), self.structure.out])],
                           titles=("nearest neighbours", "token structure"))
        self.widget = widgets.VBox([self.model, tabs])
        self.widget.view = self
        for control in (self.model, self.word, self.k):
            control.observe(self.show_neighbours, names="value")
        for control in (self.model, self.preset, self.custom):
            control.observe(self.show_structure, names="value")
        self.show_neighbours()
        self.show_structure()

    def show_neighbours(self, change=None) -> None:
        """Callback: list the k nearest tokens to the query and plot them with PCA."""
        table = embedding_table(self.models[self.model.value]).cpu()  # (V, D)
        try:
            info = describe_neighbours(table, self.enc, self.word.value, self.k.value)
        except ValueError as err:  # e.g. a token the model never saw: one line, naming the model
            return self._show(f"{self.model.value}: {err}")
        fig, ax = bare_figure((6.5, 5))
        ids = [info["token_id"]] + info["ids"]
        labels = [_token(self.enc, info["token_id"])] + info["tokens"]
        plot_embedding_scatter(table, ids, labels, ax=ax, highlight=[info["token_id"]],
                               title=f"{self.model.value}: {labels[0]!r} and its {len(info['ids'])} nearest tokens")
        self._show(info["text"], fig)

    def show_structure(self, change=None) -> None:
        """Callback: PCA map of the preset (or custom) token list in the selected model."""
        words = STRUCTURE_PRESETS[self.preset.value] or [w for w in self.custom.value.split("|") if w]
        fig, ax = bare_figure((7, 5.5))
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                token_structure_plot(embedding_table(self.models[self.model.value]).cpu(), self.enc, words, ax=ax,
                                     title=f"{self.model.value}: {len(words)} tokens in order")
        except ValueError as err:
            return self.structure._show(f"{self.model.value}: {err}")
        self.structure._show("\n".join(f"{self.model.value}: {w.message}" for w in caught), fig)


def embedding_inspector(models: dict, enc, default_word: str = " the", k: int = 8):
    """An ipywidgets panel: nearest neighbours of a word in a chosen model, and a token-structure map.
    Args: models {name: model}; enc: their tokenizer; default_word: first query; k. ``widget.view``: the panel."""
    return EmbeddingInspector(models, enc, default_word, k).widget


# --- attention viewer ---

class AttentionViewer(_View):
    """Layer and head sliders over the attention maps of one prompt; ``show`` is the callback."""

    def __init__(self, model, enc, prompt: str):
        import ipywidgets as widgets

        super().__init__()
        self.model, self.enc = model, enc
        self.prompt = widgets.Text(value=prompt, description="prompt", continuous_update=False,
                                   layout=widgets.Layout(width="100%"))  # the default 300 px shows 34 characters
        self.layer = widgets.IntSlider(value=0, min=0, max=0, description="layer")
        self.head = widgets.IntSlider(value=0, min=0, max=0, description="head")
        self.note = widgets.Label()  # says why a slider is disabled
        self.widget = widgets.VBox([self.prompt, widgets.HBox([self.layer, self.head, self.note]), self.out])
        self.widget.view = self
        self._compute()  # a bad first prompt raises; later ones are shown in the panel
        self.prompt.observe(self.set_prompt, names="value")
        for slider in (self.layer, self.head):
            slider.observe(self.show, names="value")
        self.show()

    def _compute(self) -> None:
        self.attn, self.tokens = attention_maps(self.model, self.enc, self.prompt.value)  # (L, H, T, T)
        self.layer.max, self.head.max = self.attn.shape[0] - 1, self.attn.shape[1] - 1
        # A slider over a single value (a one-layer model) is disabled, and the note says why.
        fixed = [f"{n} {what}" for n, what in ((self.attn.shape[0], "layer"), (self.attn.shape[1], "head")) if n == 1]
        self.layer.disabled, self.head.disabled = self.layer.max == 0, self.head.max == 0
        self.note.value = f"fixed at 0: this model has {' and '.join(fixed)} only" if fixed else ""

    def set_prompt(self, change=None) -> None:
        """Callback: recompute the maps for the prompt box's text and draw them (an error is shown, not raised)."""
        try:
            self._compute()
        except ValueError as err:
            return self._show(f"{err}")
        self.show()

    def show(self, change=None) -> None:
        """Callback: draw the selected layer and head."""
        side = min(7.0, 3.0 + 0.2 * len(self.tokens))  # <= 630 px at 90 dpi: the panel fits a 1000-px window
        fig, ax = bare_figure((side + 1.0, side))
        plot_attention(self.attn, self.tokens, self.layer.value, self.head.value, ax=ax)
        self._show("", fig)


def attention_viewer(model, enc, prompt: str):
    """An ipywidgets panel with layer and head sliders showing plot_attention for ``prompt``.
    Args: model (accepting ``return_attention=True``), enc, prompt. ``widget.view`` is its AttentionViewer."""
    return AttentionViewer(model, enc, prompt).widget
