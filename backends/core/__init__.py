"""The lowest layer: errors, specs, parameters, events, conversations, units, paths. Imports nothing else of backends."""
