"""GPT-2's tokenizer (50,257 tokens), online through tiktoken or offline from a verified rank file.

Used in every notebook; introduced in 01_embeddings.ipynb.
"""
from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

__all__ = ["get_tokenizer", "provision_rank_file", "rank_file_path", "CompactVocab", "VOCAB_SIZE", "EOT_TOKEN"]

VOCAB_SIZE = 50257
EOT_TOKEN = 50256  # <|endoftext|>

# The r50k_base ranks: the same 50,256 byte-pair ranks as "gpt2", without the special token.
RANK_FILE_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# openai-whisper's source distribution ships that file byte-identical as whisper/assets/gpt2.tiktoken.
WHISPER_SDIST = "openai-whisper==20250625"
# GPT-2's pre-tokenisation regex (tiktoken's gpt2 / r50k_base pattern).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

_PACKAGE_ASSET = Path(__file__).resolve().parents[1] / "assets" / "gpt2.tiktoken"
PROVISION_COMMAND = f"{sys.executable} -m pico_helpers.tokenizer --provision   (or: make setup)"


def rank_file_path() -> Path | None:
    """Return the first verified local GPT-2 rank file, or None.

    Looks at $PICO_GPT2_TIKTOKEN, then pico_helpers/assets/gpt2.tiktoken, then ~/.cache/pico-llm/.
    """
    candidates = []
    if os.environ.get("PICO_GPT2_TIKTOKEN"):
        candidates.append(Path(os.environ["PICO_GPT2_TIKTOKEN"]).expanduser())
    candidates += [_PACKAGE_ASSET, Path.home() / ".cache" / "pico-llm" / "gpt2.tiktoken"]
    for path in candidates:
        if path.is_file() and _sha256(path) == RANK_FILE_SHA256:
            return path
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _encoding_from_rank_file(path: Path):
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(path), expected_hash=RANK_FILE_SHA256)
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT_TOKEN},
        explicit_n_vocab=VOCAB_SIZE,
    )


@functools.lru_cache(maxsize=None)
def get_tokenizer():
    """Return GPT-2's tiktoken encoding, built once per process.

    Prefers a verified local rank file (no network needed); otherwise asks tiktoken, which downloads
    and caches its files. If neither works, raises RuntimeError naming the provisioning command.
    """
    local = rank_file_path()
    if local is not None:
        return _encoding_from_rank_file(local)
    try:
        import tiktoken

        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # no internet, blocked store, ...
        raise RuntimeError(
            "GPT-2's tokenizer files are not available: tiktoken could not download them "
            f"({type(err).__name__}: {err}) and no local rank file was found.\n"
            f"Provision it once with:\n    {PROVISION_COMMAND}\n"
            "or set PICO_GPT2_TIKTOKEN to a copy of r50k_base.tiktoken / gpt2.tiktoken."
        ) from err


def provision_rank_file(dest: Path = _PACKAGE_ASSET, quiet: bool = False) -> Path:
    """Fetch GPT-2's rank file from openai-whisper's sdist on PyPI, verify its sha256, save it.

    Only that one file is extracted; whisper is not installed. Returns the path written.
    """
    dest = Path(dest)
    if dest.is_file() and _sha256(dest) == RANK_FILE_SHA256:
        if not quiet:
            print(f"tokenizer: {dest} already present and verified")
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "-d", tmp, WHISPER_SDIST]
        result = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("openai*whisper*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise RuntimeError(
                f"could not download {WHISPER_SDIST} from PyPI to extract GPT-2's rank file:\n"
                f"{result.stderr.strip()[-800:]}\n"
                "Check that pip can reach PyPI, or set PICO_GPT2_TIKTOKEN to a local copy of the file."
            )
        with tarfile.open(archives[0]) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("whisper/assets/gpt2.tiktoken")), None)
            if member is None:
                raise RuntimeError(f"{archives[0].name} has no whisper/assets/gpt2.tiktoken")
            data = tar.extractfile(member).read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != RANK_FILE_SHA256:
        raise RuntimeError(f"GPT-2 rank file has sha256 {digest}, expected {RANK_FILE_SHA256}; not saved")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".partial")
    partial.write_bytes(data)
    os.replace(partial, dest)
    if not quiet:
        print(f"tokenizer: wrote {dest} ({len(data):,} bytes, sha256 verified)")
    return dest


# --- compact vocabulary ---

class CompactVocab:
    """A dense vocabulary over only the GPT-2 ids a corpus uses; encodes to and decodes from compact ids.

    3seqs uses a few hundred of GPT-2's 50,257 tokens, so a model over the compact ids has a far
    smaller embedding table and unembedding. Losses over it are NOT comparable with full-vocabulary
    losses (fewer competitors for each prediction). Used in quick runs and in 06_experiments.ipynb.
    """

    def __init__(self, gpt2_ids, base):
        self.ids = sorted(set(int(i) for i in gpt2_ids))
        self.base = base
        self.to_compact = {g: c for c, g in enumerate(self.ids)}
        self.n_vocab = len(self.ids)
        self.name = f"compact-{base.name}-{self.n_vocab}"

    @classmethod
    def from_sequences(cls, seqs, base) -> "CompactVocab":
        """Build from GPT-2 id sequences; id 0 (the padding id) and <|endoftext|> are always included."""
        used = {0, EOT_TOKEN}
        for s in seqs:
            used.update(s)
        return cls(used, base)

    def remap(self, gpt2_ids) -> list[int]:
        """GPT-2 ids -> compact ids (ValueError for an id outside this vocabulary)."""
        try:
            return [self.to_compact[int(i)] for i in gpt2_ids]
        except KeyError as err:
            token = self.base.decode([int(err.args[0])])
            raise ValueError(
                f"token {token!r} (GPT-2 id {err.args[0]}) is not in this compact vocabulary of {self.n_vocab} ids, "
                "built from the training corpus; use text made of the corpus's tokens, or train with "
                "compact_vocab=False") from None

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> compact ids."""
        return self.remap(self.base.encode_ordinary(text))

    encode = encode_ordinary

    def to_gpt2(self, ids) -> list[int]:
        """Compact ids -> GPT-2 ids."""
        return [self.ids[int(i)] for i in ids]

    def decode(self, ids) -> str:
        """Compact ids -> text."""
        return self.base.decode(self.to_gpt2(ids))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="GPT-2 tokenizer utilities")
    parser.add_argument("--provision", action="store_true", help="fetch and verify the offline rank file")
    args = parser.parse_args()
    if args.provision:
        provision_rank_file()
    enc = get_tokenizer()
    print(f"tokenizer: {enc.name}, {enc.n_vocab} tokens; 'Hello world' -> {enc.encode('Hello world')}")
