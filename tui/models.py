"""The models the app can switch between: specs from the command line and config, and loaded handles."""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.spec import DEFAULT_MODEL, ModelSpec

#: Loading flags that, when given, override what a config alias says.
_FLAGS = ("quant", "dtype", "device_map", "engine", "max_memory")


@dataclass(frozen=True)
class LoadOptions:
    """The loading flags of the command line (None: not given)."""

    quant: str | None = None
    dtype: str | None = None
    device_map: str | None = None
    engine: str | None = None
    max_memory: str | None = None
    trust_remote_code: bool = False

    @classmethod
    def from_args(cls, args) -> "LoadOptions":
        values = {}
        for flag in _FLAGS:
            value = getattr(args, flag, None)
            if value is not None and value != ModelSpec.__dataclass_fields__[flag].default:
                values[flag] = value
        return cls(**values, trust_remote_code=bool(getattr(args, "trust_remote_code", False)))


def load_config():
    """The config file, or None when it cannot be read (the app still starts)."""
    try:
        from backends.config import load_config as load
    except ImportError:
        return None
    return load()


def spec_for(name: str | None, options: LoadOptions, config=None) -> ModelSpec:
    """The spec for a MODEL argument: a config alias, a path, an HF id, or the default."""
    if config is None:
        spec = ModelSpec(source=None if name in (None, "", DEFAULT_MODEL) else name)
    elif name in ("", DEFAULT_MODEL):
        d = config.defaults
        spec = ModelSpec(quant=d.quant, dtype=d.dtype, device_map=d.device_map)
    else:
        spec = config.spec_for(name)  # None: the [defaults] model
    changes = {flag: getattr(options, flag) for flag in _FLAGS if getattr(options, flag) is not None}
    if options.trust_remote_code:
        changes["trust_remote_code"] = True
    return spec.with_(**changes) if changes else spec


@dataclass
class Slot:
    """One switchable model: how to load it and, once loaded, its handle."""

    name: str  # what the user typed (shown in the picker)
    spec: ModelSpec
    handle: object | None = None
    error: str | None = None

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
