"""What can be loaded: the default model, config aliases, the local HF cache."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from backends.checkpoint.demo import demo_dir, demo_ready
from backends.storage.config import load_config


@dataclass(frozen=True)
class CatalogEntry:
    kind: str  # "default", "alias", "hf-cache"
    name: str  # what to pass as MODEL
    detail: str

    def to_json(self) -> dict:
        return asdict(self)


def list_models() -> list[CatalogEntry]:
    entries = [CatalogEntry("default", "default",
                            f"SmolLM2-135M-Instruct — {'ready at ' + str(demo_dir()) if demo_ready() else 'prepared on first use (llm-tui fetch-demo)'}")]
    entries.extend(_aliases())
    entries.extend(_hf_cache())
    return entries


def _aliases() -> list[CatalogEntry]:
    try:
        config = load_config()
    except Exception:
        return []
    out = []
    for alias in getattr(config, "aliases", ()):
        spec = config.model_spec(alias)
        extra = f" · {spec.quant}" if spec.quant != "none" else ""
        out.append(CatalogEntry("alias", alias, f"{spec.source}{extra}"))
    return out


def _hf_cache() -> list[CatalogEntry]:
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:
        return []
    out = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        files = {f.file_name for rev in repo.revisions for f in rev.files}
        if "config.json" not in files:
            continue
        out.append(CatalogEntry("hf-cache", repo.repo_id, f"{repo.size_on_disk / 2**30:.1f} GiB in the HF cache"))
    return out
