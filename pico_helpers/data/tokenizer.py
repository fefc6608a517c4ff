"""GPT-2's tokenizer (50,257 tokens), online through tiktoken or offline from a verified rank file."""
from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

__all__ = ["get_tokenizer", "provision_rank_file", "rank_file_path", "VOCAB_SIZE", "EOT_TOKEN"]

VOCAB_SIZE = 50257
EOT_TOKEN = 50256  # <|endoftext|>

# The r50k_base ranks: the same 50,256 byte-pair ranks as "gpt2", without the special token.
RANK_FILE_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# openai-whisper's source distribution ships that file byte-identical as whisper/assets/gpt2.tiktoken.
WHISPER_SDIST = "openai-whisper==20250625"
# GPT-2's pre-tokenisation regex (tiktoken's gpt2 / r50k_base pattern).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

_PACKAGE_ASSET = Path(__file__).resolve().parents[1] / "assets" / "gpt2.tiktoken"
PROVISION_COMMAND = "make setup   (or, in the repository: python -m tools.provision_tokenizer)"


def rank_file_path() -> Path | None:
    """The first verified GPT-2 rank file of $PICO_GPT2_TIKTOKEN, pico_helpers/assets/, ~/.cache/pico-llm/; or None."""
    env = os.environ.get("PICO_GPT2_TIKTOKEN")
    candidates = [Path(env).expanduser()] if env else []
    candidates += [_PACKAGE_ASSET, Path.home() / ".cache" / "pico-llm" / "gpt2.tiktoken"]
    return next((p for p in candidates if p.is_file() and _sha256(p) == RANK_FILE_SHA256), None)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=None)
def get_tokenizer():
    """GPT-2's tiktoken encoding, built once: from a verified local rank file, else through tiktoken's download."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    local = rank_file_path()
    if local is not None:
        ranks = load_tiktoken_bpe(str(local), expected_hash=RANK_FILE_SHA256)
        return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                                 special_tokens={"<|endoftext|>": EOT_TOKEN}, explicit_n_vocab=VOCAB_SIZE)
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # no internet, blocked store, ...
        raise RuntimeError(f"GPT-2's tokenizer files are not available: tiktoken could not download them "
                           f"({type(err).__name__}: {err}) and no local rank file was found.\nProvision it once "
                           f"with:\n    {PROVISION_COMMAND}\nor set PICO_GPT2_TIKTOKEN to a copy of "
                           "r50k_base.tiktoken / gpt2.tiktoken.") from err


def provision_rank_file(dest: Path = _PACKAGE_ASSET, quiet: bool = False) -> Path:
    """Extract GPT-2's rank file from openai-whisper's sdist on PyPI (not installed), verify, save; its path."""
    dest, say = Path(dest), (lambda msg: None) if quiet else print
    if dest.is_file() and _sha256(dest) == RANK_FILE_SHA256:
        say(f"tokenizer: {dest} already present and verified")
        return dest
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "-d", tmp, WHISPER_SDIST]
        result = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("openai*whisper*.tar.gz"))
        if result.returncode != 0 or not archives:
            raise RuntimeError(f"could not download {WHISPER_SDIST} from PyPI to extract GPT-2's rank file:\n"
                               f"{result.stderr.strip()[-800:]}\nCheck that pip can reach PyPI, or set "
                               "PICO_GPT2_TIKTOKEN to a local copy of the file.")
        with tarfile.open(archives[0]) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("whisper/assets/gpt2.tiktoken")), None)
            if member is None:
                raise RuntimeError(f"{archives[0].name} has no whisper/assets/gpt2.tiktoken")
            data = tar.extractfile(member).read()
    if (digest := hashlib.sha256(data).hexdigest()) != RANK_FILE_SHA256:
        raise RuntimeError(f"GPT-2 rank file has sha256 {digest}, expected {RANK_FILE_SHA256}; not saved")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.with_suffix(".partial").write_bytes(data)
    os.replace(dest.with_suffix(".partial"), dest)
    say(f"tokenizer: wrote {dest} ({len(data):,} bytes, sha256 verified)")
    return dest
