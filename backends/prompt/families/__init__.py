"""Prompt families: each rebuilds a model's prompt exactly (chat templates, Qwen v1, ChatGLM3, Baichuan2)."""
