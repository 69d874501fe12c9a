"""Everything below the screen: models, prompts, generation, telemetry, storage.

This package never imports textual; it is usable from scripts and tests.
"""

__version__ = "0.1.0"
