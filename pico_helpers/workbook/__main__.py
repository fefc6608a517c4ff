"""`python -m pico_helpers.workbook`: run every notebook headless and export the answers (`make workbook`)."""
import sys

from pico_helpers.workbook.run import main

sys.exit(main())
