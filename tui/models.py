"""The models the app can switch between: specs from the command line and config, and loaded handles."""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.core.spec import ModelSpec


@dataclass
class Slot:
    """One switchable model: how to load it and, once loaded, its handle."""

    name: str  # what the user typed (shown in the picker)
    spec: ModelSpec
    handle: object | None = None

    @property
    def label(self) -> str:
        return self.handle.info.label if self.handle is not None else self.spec.label


@dataclass
class Models:
    slots: list[Slot] = field(default_factory=list)
    active: int | None = None  # the slot whose model answers
    loading: int | None = None  # the slot being loaded

    def add(self, name: str, spec: ModelSpec) -> int:
        """The index of the slot for ``spec``, adding one when it is new."""
        for index, slot in enumerate(self.slots):
            if slot.spec == spec:
                return index
        self.slots.append(Slot(name, spec))
        return len(self.slots) - 1

    def find(self, name: str) -> int | None:
        """A slot by number (1-based), name or label."""
        if name.isdigit() and 1 <= int(name) <= len(self.slots):
            return int(name) - 1
        for index, slot in enumerate(self.slots):
            if name in (slot.name, slot.label, str(slot.spec.source)):
                return index
        return None

    @property
    def handle(self):
        return self.slots[self.active].handle if self.active is not None else None

    @property
    def current(self) -> Slot | None:
        return self.slots[self.active] if self.active is not None else None

    def loaded_others(self, keep: int) -> list[Slot]:
        return [s for i, s in enumerate(self.slots) if i != keep and s.handle is not None]
