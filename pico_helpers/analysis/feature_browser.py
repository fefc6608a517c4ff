"""A feature browser for a sparse autoencoder: what each feature fires on in held-out stories, how often, which next
tokens it pushes up and down; and the strongest features of each token of a sentence (07_monosemanticity)."""
from __future__ import annotations

import copy
import html

import torch

from pico_helpers.analysis.sae import feature_purity, top_activations
from pico_helpers.analysis.sae_runs import SAERun
from pico_helpers.analysis.sae_stories import raw_transformer, story_activations

__all__ = ["FeatureIndex", "FeatureBrowser", "feature_browser"]

HIGHLIGHT = "255, 140, 0"  # the RGB of an activating token's background; its opacity is the activation's strength


# --- the precomputed held-out sample ---

class FeatureIndex:
    """The SAE features of a held-out sample, computed once: each feature's top activations, its firing frequency,
    and the activations themselves (features are re-encoded from them on demand, so every number is exact).
    Args: model (CorpusVocabModel or TransformerModel), sae_run (trained_sae / load_sae), enc (GPT-2's tokenizer),
        seqs: held-out GPT-2 id sequences; max_tokens: how many of their tokens; top: activations kept per feature."""

    def __init__(self, model, sae_run: SAERun, enc, seqs: list, max_tokens: int = 20_000, top: int = 20):
        self.model, self.run, self.enc = model, sae_run, enc
        self.sae = copy.deepcopy(sae_run.sae).cpu().eval()  # a CPU copy: the run's own SAE is left where it is
        self.story = story_activations(model, seqs, sae_run.layer, sae_run.site, max_tokens)  # (N, D_site)
        self.ids = self.story.ids  # (N,)
        self.values, self.rows, self.counts = top_activations(self.sae.encode, self.story.acts, top)  # (top, F) x2, (F,)
        self.n_tokens, self.n_features = len(self.ids), self.sae.n_features
        self.purity = feature_purity(self.values, self.rows, self.ids, self.story.next_ids)

    def token(self, token_id: int) -> str:
        return self.enc.decode([int(token_id)])

    def check_feature(self, f) -> int:
        """``f`` as a feature number, or a ValueError naming the valid range."""
        if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < self.n_features:
            raise ValueError(f"feature must be a number in 0..{self.n_features - 1}, got {f!r}")
        return f

    @torch.no_grad()
    def encode_rows(self, rows) -> torch.Tensor:
        """(len(rows), F) feature activations of the given rows of the sample."""
        return self.sae.encode(self.story.acts[torch.as_tensor(rows, dtype=torch.long)])

    def density(self, f: int) -> str:
        """One line: how often feature f fires on the sample, and its rank by frequency."""
        f = self.check_feature(f)
        count = int(self.counts[f])
        if count == 0:
            return f"feature {f} never fires on these {self.n_tokens:,} held-out tokens (dead here)"
        rank = int((self.counts > count).sum()) + 1
        return (f"feature {f} fires on {count:,} of {self.n_tokens:,} held-out tokens ({100 * count / self.n_tokens:.2f} "
                f"%), rank {rank:,} of {self.n_features:,} features by frequency")

    def top_contexts(self, f: int, n: int = 8, before: int = 12, after: int = 3) -> list[dict]:
        """Feature f's n strongest held-out activations, strongest first: dict(value, row, tokens, acts, at) with the
        context's token ids, f's activation on each, and the index of the activating token in them."""
        f = self.check_feature(f)
        found = []
        for value, row in zip(self.values[:, f].tolist(), self.rows[:, f].tolist()):
            if value <= 0 or len(found) == n:
                break
            s, p = self.story.where(row)
            lo, hi = max(0, p - before), min(len(self.story.seqs[s]), p + after + 1)
            first = self.story.starts[s]
            acts = self.encode_rows(range(first + lo, first + hi))[:, f]  # (hi - lo,)
            found.append({"value": value, "row": row, "tokens": self.story.seqs[s][lo:hi], "acts": acts.tolist(),
                          "at": p - lo})
        return found

    @torch.no_grad()
    def logit_effects(self, f: int, n: int = 8) -> tuple[list, list]:
        """The tokens whose logits feature f raises and lowers most, as [(token, effect)] each, largest first.
        A first-order, direct readout: W_U (g * d), with d the feature's decoder column (through the MLP's output
        projection for the "mlp" site) and g the final RMSNorm's gain; it ignores the blocks after the SAE's layer
        and the norm's division by the RMS, so it ranks tokens, it does not predict logits."""
        f = self.check_feature(f)
        raw, _ = raw_transformer(self.model)
        d = (self.sae.W_dec[:, f] / self.sae.scale).to(raw.head.weight.device)  # (D_site,)
        if self.run.site == "mlp":
            d = raw.blocks[self.run.layer].mlp.proj.weight @ d  # (D,) what the MLP adds to the stream
        gain = getattr(raw.final_norm, "weight", None)  # post-norm models have no final norm
        effect = raw.head.weight @ (d if gain is None else gain * d)  # (V_model,)
        vocab = getattr(self.model, "vocab", None)
        ids = torch.tensor(vocab.ids) if vocab is not None else torch.arange(len(effect))
        effect = effect[:len(ids)].cpu()  # a corpus vocabulary's "other" (last) is no token
        up, down = effect.topk(n), (-effect).topk(n)
        return ([(self.token(ids[i]), v) for v, i in zip(up.values.tolist(), up.indices.tolist())],
                [(self.token(ids[i]), -v) for v, i in zip(down.values.tolist(), down.indices.tolist())])

    @torch.no_grad()
    def token_features(self, token_id: int, n: int = 8) -> tuple[int, list]:
        """(how often the token occurs in the sample, [(feature, mean activation over its occurrences)] strongest
        first): the features that token activates most."""
        rows = (self.ids == int(token_id)).nonzero().flatten()
        if len(rows) == 0:
            return 0, []
        mean = self.encode_rows(rows).mean(0)  # (F,)
        top = mean.topk(min(n, len(mean)))
        return len(rows), [(i, v) for v, i in zip(top.values.tolist(), top.indices.tolist()) if v > 0]

    @torch.no_grad()
    def sentence_features(self, text: str, n: int = 4) -> list[tuple[str, list]]:
        """Each token of ``text`` (up to the model's block_size) with its n strongest features [(feature, value)]."""
        ids = self.enc.encode_ordinary(text)
        if not ids:
            raise ValueError("type a sentence (at least one token)")
        block = getattr(raw_transformer(self.model)[0], "block_size", len(ids))
        acts = story_activations(self.model, [ids[:block]], self.run.layer, self.run.site).acts
        feats = self.sae.encode(acts)  # (T, F)
        top = feats.topk(min(n, feats.shape[1]), dim=1)
        return [(self.token(t), [(i, v) for v, i in zip(vs, ix) if v > 0])
                for t, vs, ix in zip(ids, top.values.tolist(), top.indices.tolist())]

    # --- as text (a notebook cell) and as HTML (the browser) ---

    def label(self, f: int) -> str:
        """The token feature f fires on most among its top activations, with that share, e.g. "' dog' (85 %)"."""
        mode = int(self.purity["mode"][f])
        return "-" if mode < 0 else f"{self.token(mode)!r} ({100 * float(self.purity['token'][f]):.0f} %)"

    def context_text(self, ctx: dict) -> str:
        """A context as plain text, the activating token in [brackets], newlines as ⏎."""
        pieces = [self.token(t) for t in ctx["tokens"]]
        pieces[ctx["at"]] = f"[{pieces[ctx['at']]}]"
        return "".join(pieces).replace("\n", "⏎")

    def context_html(self, ctx: dict, scale: float) -> str:
        """A context as HTML: each token's background as strong as f's activation there (relative to ``scale``)."""
        spans = []
        for t, a in zip(ctx["tokens"], ctx["acts"]):
            alpha = 0.0 if a <= 0 or scale <= 0 else min(1.0, a / scale)
            text = html.escape(self.token(t).replace("\n", "⏎"))
            spans.append(f'<span title="{a:.3f}" style="background: rgba({HIGHLIGHT}, {alpha:.2f}); '
                         f'white-space: pre">{text}</span>')
        return f'<div style="font-family: monospace; margin: 2px 0">{ctx["value"]:.2f}&nbsp;&nbsp;{"".join(spans)}</div>'

    def feature_html(self, f: int, n_contexts: int = 8, n_tokens: int = 8) -> str:
        """Feature f's card: density, label, logit effects and its top contexts, highlighted."""
        f = self.check_feature(f)
        up, down = self.logit_effects(f, n_tokens)
        fmt = lambda pairs: ", ".join(f"{html.escape(repr(t))} ({v:+.2f})" for t, v in pairs)  # noqa: E731
        contexts = self.top_contexts(f, n_contexts)
        scale = contexts[0]["value"] if contexts else 1.0
        body = "".join(self.context_html(c, scale) for c in contexts) or "<i>no activation in the sample</i>"
        return (f"<div class='pico-feature' data-feature='{f}'><b>Feature {f}</b>: {html.escape(self.density(f))}"
                f"<br>most common activating token: {html.escape(self.label(f))}"
                f"<br>raises: {fmt(up)}<br>lowers: {fmt(down)}"
                f"<br><small>(logit effects: a first-order readout W_U (g &middot; d) of the decoder column, "
                f"ignoring the later blocks)</small><br><b>top contexts</b> (activation, then the context; the "
                f"background shows the feature's strength on each token):{body}</div>")


# --- the widget ---

class FeatureBrowser:
    """Two tabs over a FeatureIndex: one feature (by number, or the features a typed token activates most), and a
    typed sentence with each token's strongest features. ``show_feature``, ``show_token`` and ``show_sentence``
    are the callbacks; ``last_html`` the feature card last shown (what the tests read)."""

    def __init__(self, index: FeatureIndex, feature: int | None = None, token: str = "",
                 sentence: str = "Once upon a time, there was a little dog named Max."):
        import ipywidgets as widgets

        self.index = index
        if feature is None:  # the most frequent feature that is not dense: a readable first card
            freq = index.counts.float() / index.n_tokens
            feature = int(torch.where(freq <= 0.1, freq, torch.zeros_like(freq)).argmax())
        self.feature = widgets.BoundedIntText(value=feature, min=0, max=index.n_features - 1, description="feature")
        self.token = widgets.Text(value=token, description="token", continuous_update=False,
                                  placeholder="' dog' (leading space matters)")
        self.matches = widgets.HTML()  # the features of the typed token
        self.card = widgets.HTML()
        self.sentence = widgets.Text(value=sentence, description="sentence", continuous_update=False,
                                     layout=widgets.Layout(width="100%"))
        self.per_token = widgets.HTML()
        tabs = widgets.Tab(children=[widgets.VBox([widgets.HBox([self.feature, self.token]), self.matches, self.card]),
                                     widgets.VBox([self.sentence, self.per_token])],
                           titles=("features", "sentence"))
        self.widget = widgets.VBox([tabs])
        self.widget.view = self
        self.feature.observe(self.show_feature, names="value")
        self.token.observe(self.show_token, names="value")
        self.sentence.observe(self.show_sentence, names="value")
        self.show_feature()
        self.show_sentence()
        if token:
            self.show_token()

    @property
    def last_html(self) -> str:
        return self.card.value

    def show_feature(self, change=None) -> None:
        """Callback: the selected feature's card."""
        self.card.value = self.index.feature_html(int(self.feature.value))

    def show_token(self, change=None) -> None:
        """Callback: the features the typed token activates most; the strongest is then shown below."""
        ids = self.index.enc.encode_ordinary(self.token.value)
        if not ids:
            self.matches.value = "<i>type a token, e.g. ' dog' (with its leading space)</i>"
            return
        note = "" if len(ids) == 1 else f" ({len(ids)} tokens; using the first, {self.index.token(ids[0])!r})"
        count, feats = self.index.token_features(ids[0])
        if not feats:
            self.matches.value = html.escape(f"{self.index.token(ids[0])!r}{note}: not in the held-out sample, or "
                                             "no feature fires on it")
            return
        listed = ", ".join(f"F{f} {v:.2f} {self.index.label(f)}" for f, v in feats)
        self.matches.value = html.escape(f"{self.index.token(ids[0])!r}{note}, {count} times in the sample; its "
                                         f"strongest features (mean activation): {listed}")
        if self.feature.value == feats[0][0]:
            self.show_feature()
        else:
            self.feature.value = feats[0][0]  # its observer shows that feature's card

    def show_sentence(self, change=None) -> None:
        """Callback: each token of the sentence with its strongest features."""
        try:
            rows = self.index.sentence_features(self.sentence.value)
        except ValueError as err:
            self.per_token.value = html.escape(str(err))
            return
        cells = "".join(f"<tr><td style='font-family: monospace; white-space: pre'>{html.escape(repr(t))}</td><td>"
                        + (", ".join(f"F{f} ({v:.2f}) {html.escape(self.index.label(f))}" for f, v in feats) or "-")
                        + "</td></tr>" for t, feats in rows)
        self.per_token.value = (f"<table class='pico-sentence'><tr><th>token</th><th>strongest features "
                                f"(activation) and each one's most common token</th></tr>{cells}</table>")


def feature_browser(model, sae_run: SAERun, enc, seqs: list, max_tokens: int = 20_000, **kwargs):
    """An ipywidgets feature browser for ``sae_run`` over held-out ``seqs`` (computed once, ``max_tokens`` tokens).
    kwargs: FeatureBrowser's (feature, token, sentence). ``widget.view`` is the FeatureBrowser, ``view.index`` its
    FeatureIndex."""
    return FeatureBrowser(FeatureIndex(model, sae_run, enc, seqs, max_tokens), **kwargs).widget
