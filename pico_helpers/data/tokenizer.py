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
PROVISION_COMMAND = "make setup (or, in the repository: python -m tools.provision_tokenizer)"


def _candidates() -> list[Path]:
    """Where a rank file is looked for, in order: $PICO_GPT2_TIKTOKEN, pico_helpers/assets/, ~/.cache/pico-llm/."""
    env = os.environ.get("PICO_GPT2_TIKTOKEN")
    return ([Path(env).expanduser()] if env else []) + [_PACKAGE_ASSET, Path.home() / ".cache" / "pico-llm" /
                                                         "gpt2.tiktoken"]


def rank_file_path() -> Path | None:
    """The first verified GPT-2 rank file of $PICO_GPT2_TIKTOKEN, pico_helpers/assets/, ~/.cache/pico-llm/; or None."""
    return next((p for p in _candidates() if p.is_file() and _sha256(p) == RANK_FILE_SHA256), None)


def _damaged_rank_file_hint() -> str | None:
    """The way out when a rank file is there but is not GPT-2's (truncated, half-downloaded): ``make setup`` alone
    would find the file present and do nothing, so it says to delete it or re-provision, which replaces it."""
    for p in _candidates():
        if p.is_file():  # not verified, or rank_file_path() would have returned it
            size = p.stat().st_size
            if p != _PACKAGE_ASSET:
                return (f"GPT-2's rank file {p} is damaged ({size:,} bytes, sha256 mismatch): replace it with a good "
                        "copy of gpt2.tiktoken, or delete it (or unset PICO_GPT2_TIKTOKEN) and run make setup")
            return (f"GPT-2's rank file {p} is damaged ({size:,} bytes, sha256 mismatch; truncated?): delete it and "
                    "run make setup, or run python -m tools.provision_tokenizer, which fetches it again")
    return None


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
        cause = " ".join(f"{type(err).__name__}: {err}".split())[:300]  # one line
        damaged = _damaged_rank_file_hint()
        if damaged:
            raise RuntimeError(f"{damaged} (tiktoken could not download it either: {cause})") from err
        raise RuntimeError(f"GPT-2's tokenizer files are not available: no local rank file, and tiktoken could not "
                           f"download them ({cause}); provision it once with {PROVISION_COMMAND}, or set "
                           "PICO_GPT2_TIKTOKEN to a copy of r50k_base.tiktoken / gpt2.tiktoken") from err


def provision_rank_file(dest: Path = _PACKAGE_ASSET, quiet: bool = False) -> Path:
    """Extract GPT-2's rank file from openai-whisper's sdist on PyPI (not installed), verify, save; its path."""
    dest, say = Path(dest), (lambda msg: None) if quiet else print
    if dest.is_file() and _sha256(dest) == RANK_FILE_SHA256:
        say(f"tokenizer: {dest} already present and verified")
        return dest
    if dest.is_file():
        say(f"tokenizer: {dest} is damaged ({dest.stat().st_size:,} bytes, sha256 mismatch); fetching it again")
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
