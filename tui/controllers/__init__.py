"""The app's controllers: each owns one part of its state and logic; ``app.py`` wires them."""
