"""pico-llm workbook helpers (exports filled in once all modules land)."""
