"""The exact prompt: views with pieces and spans, prompt families, truncation, incremental detokenising."""
