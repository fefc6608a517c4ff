"""The workbook's build tools, outside the student package: run the notebooks headless and export answers.md."""
