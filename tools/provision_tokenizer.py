"""`make setup`'s last step (`python -m tools.provision_tokenizer`): fetch GPT-2's rank file once, verify it, load it.

A script of its own rather than `python -m pico_helpers.data.tokenizer`: the package imports that module, and
running a module the package has already imported makes runpy warn that it was found in sys.modules."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    from pico_helpers.data.tokenizer import get_tokenizer, provision_rank_file

    provision_rank_file()
    enc = get_tokenizer()
    print(f"tokenizer: {enc.name}, {enc.n_vocab} tokens; 'Hello world' -> {enc.encode('Hello world')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
