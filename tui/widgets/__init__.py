"""Widgets of the main screen: chat, input, status bar, inspector and meter."""
