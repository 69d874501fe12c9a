"""Prompt families: how each model family turns messages into token IDs.

Every family implements :class:`backends.families.base.PromptFamily`.
``detect.py`` picks one from the files in a model directory.
"""
