"""The Textual front end of llm-tui. It imports backends; never the reverse."""
