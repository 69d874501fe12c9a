"""Copy the accepted snapshot SVGs into screenshots/ for the README.

The snapshots in tests/__snapshots__/test_snapshots*/ are the screens the test
suite checks, so the images never drift from what the app really shows.

    python scripts/export_screenshots.py            # copy the accepted snapshots
    python scripts/export_screenshots.py --update   # re-take them first (pytest --snapshot-update)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = ROOT / "tests" / "__snapshots__"
SNAPSHOT_TESTS = ["tests/test_snapshots.py", "tests/test_snapshots_tokens.py", "tests/test_snapshots_compare.py",
                  "tests/test_snapshots_tools.py"]
OUT = ROOT / "screenshots"


def friendly_name(snapshot: Path) -> str:
    """test_main_screen[160x48].svg -> main-screen-160x48.svg"""
    stem = snapshot.stem.removeprefix("test_")
    match = re.fullmatch(r"(.+?)(?:\[(.+)\])?", stem)
    name, size = match.group(1), match.group(2)
    return name.replace("_", "-") + (f"-{size}" if size else "") + ".svg"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="re-take the snapshots before copying")
    args = parser.parse_args(argv)
    if args.update:
        done = subprocess.run([sys.executable, "-m", "pytest", *SNAPSHOT_TESTS, "-q", "--snapshot-update"],
                              cwd=ROOT)
        if done.returncode != 0:
            return done.returncode
    snapshots = sorted(SNAPSHOTS.glob("test_snapshots*/*.svg"))
    if not snapshots:
        print(f"no snapshots in {SNAPSHOTS}; run with --update", file=sys.stderr)
        return 1
    OUT.mkdir(exist_ok=True)
    for snapshot in snapshots:
        target = OUT / friendly_name(snapshot)
        shutil.copyfile(snapshot, target)
        print(target.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
