"""`python -m tools.export`: write answers.md (and answers_files/) from the executed notebooks."""
import sys

from tools.export.cli import main

sys.exit(main())
