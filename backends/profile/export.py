"""Profile rows as CSV."""

from __future__ import annotations

import csv
from pathlib import Path

from backends.core.errors import UsageError
from backends.profile.measure import COLUMNS, ProfileRow


def write_csv(rows: list[ProfileRow], path: str | Path) -> Path:
    path = Path(path).expanduser()
    columns = list(COLUMNS) + (["error"] if any(r.error for r in rows) else [])
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _csv_value(getattr(row, k)) for k in columns})
    except OSError as err:
        raise UsageError(f"cannot write the CSV file '{path}': {err.strerror or err}",
                         "give a --csv path in a folder you can write to") from None
    return path


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
