"""Screens pushed over the chat: help, model picker, remote-code consent, sessions, memory plot."""
