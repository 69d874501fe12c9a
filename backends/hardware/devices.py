"""Which devices a model's weights are on, and where its inputs go."""

from __future__ import annotations


def describe_device(model) -> str:
    """Where a model's weights are: "cpu", "cuda:0", or "cuda:0,cuda:1" (",cpu"/",disk" when offloaded)."""
    mapping = getattr(model, "hf_device_map", None)
    if mapping:
        found = set()
        for value in mapping.values():
            text = f"cuda:{value}" if isinstance(value, int) else str(value)
            found.add("cuda:0" if text == "cuda" else text)
        order = {"cpu": 1, "disk": 2}

        def key(name: str):
            if name.startswith("cuda:") and name[5:].isdigit():
                return (0, int(name[5:]), name)
            return (order.get(name, 3), 0, name)

        return ",".join(sorted(found, key=key))
    try:
        return str(next(model.parameters()).device)
    except StopIteration:
        return "cpu"


def model_devices(model) -> list[str]:
    mapping = getattr(model, "hf_device_map", None)
    found: set[str] = set()
    if mapping:
        for value in mapping.values():
            text = f"cuda:{value}" if isinstance(value, int) else str(value)
            if text == "cuda":
                text = "cuda:0"
            found.add(text)
    else:
        try:
            device = next(model.parameters()).device
            found.add(f"cuda:{device.index or 0}" if device.type == "cuda" else device.type)
        except Exception:
            found.add("cpu")
    gpus = sorted((d for d in found if d.startswith("cuda")), key=lambda d: int(d.split(":")[1]))
    return gpus or (["cpu"] if "cpu" in found or not found else sorted(found))


def input_device(model):
    try:
        return model.get_input_embeddings().weight.device
    except Exception:
        return next(model.parameters()).device
