"""What a sampling request asks, the checks that refuse one that can never be met, and the items it returns."""
from __future__ import annotations

import math
from dataclasses import dataclass

from makemore.data import MAX_ITEM_CHARS
from makemore.errors import MakemoreError, OptionError, VocabularyError

# Why an item was rejected, in the order the checks run; an item is counted under the first it fails.
REASONS = {
    "dead_end": "hit a dead end (only the end was possible before --min-len)",
    "too_long": "were longer than --max-len",
    "no_end": "did not end within {cap} characters",
    "suffix": "failed --suffix",
    "regex": "failed --regex",
    "in_data": "were in the data",
    "excluded": "were in --exclude",
    "repeat": "repeats",
}

# Seconds of drawing without a new item after which a request gives up (--patience): a hopeless request
# ends in seconds whatever the model, while a rare but possible one keeps going as long as items come
PATIENCE = 10.0

LENGTH_CAP_FACTOR = 2  # the longest item drawn, to the longest trained on (length_cap)
LONGEST_WITHOUT_ITEMS = 32  # a checkpoint that keeps no items: the cap is 64 characters plus the prefix


class NothingFound(MakemoreError):
    """The budget of draws or of time ran out before a single item met every constraint."""


@dataclass
class Request:
    """What to draw. Lengths count characters of the whole item, the prefix included."""

    n: int = 10
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    prefix: str = ""
    suffix: str = ""
    min_len: int = 1  # an item is never empty: no line of the data is
    max_len: int | None = None  # above the model's length cap: the cap
    regex: str | None = None  # must match the whole item, in RE2's syntax
    new: bool = False  # reject items of the training data (any split)
    exclude: frozenset = frozenset()
    unique: bool = False
    max_tries: int | None = None  # None: budget()'s default
    patience: float | None = PATIENCE  # seconds without a new item before giving up; None: no limit
    # a labelled model: the labels to draw among, each item's drawn in proportion to their training counts; n counts
    # the items of all of them. Empty: every label.
    labels: tuple = ()

    def budget(self) -> int:
        """max_tries, else 100 draws per item and at least 200,000 (an acceptance of 1 in 20,000 finds 10 items);
        a hopeless request is ended by its patience, so there is no ceiling."""
        return self.max_tries if self.max_tries is not None else max(100 * self.n, 200_000)


def length_cap(items: list[str], prefix: str) -> int:
    """The longest item a model trained on items draws after prefix: twice the longest item (of at most
    MAX_ITEM_CHARS), plus the prefix."""
    longest = max(map(len, items), default=LONGEST_WITHOUT_ITEMS)
    return LENGTH_CAP_FACTOR * min(longest, MAX_ITEM_CHARS) + len(prefix)


def compile_regex(pattern: str):
    """The pattern compiled by RE2, which matches in time linear in the item (no backtracking); a pattern
    outside RE2's syntax (backreferences, lookaround) is an OptionError saying why."""
    import re2

    options = re2.Options()
    options.log_errors = False  # RE2 would also print its complaint to stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as e:
        why = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise OptionError(f"--regex {pattern!r} is not a valid RE2 regular expression ({why}); RE2 matches in "
                          "linear time, so it has no backreferences or lookaround") from None


def check(request: Request, vocab, cap: int) -> tuple:
    """Refuse, before any drawing, a request that can never be met: OptionError for a value no model could
    take, MakemoreError for one beyond this model (cap: its length cap, length_cap). Returns the compiled
    regex (or None) and the notes to show, such as a --max-len above the cap."""
    r = request
    if r.n < 0:
        raise OptionError(f"-n must be 0 or more, not {r.n}")
    if not r.temperature > 0 or math.isinf(r.temperature):
        raise OptionError(f"--temperature must be above 0, not {r.temperature}")
    if r.top_k is not None and r.top_k < 1:
        raise OptionError(f"--top-k must be at least 1, not {r.top_k}")
    if r.top_k is not None and r.top_k > len(vocab):  # another model's vocabulary could take it: exit 1
        raise MakemoreError(f"--top-k {r.top_k} is above this model's vocabulary of {len(vocab)} tokens; give at "
                            f"most {len(vocab)}")
    if r.top_p is not None and not 0 < r.top_p <= 1:
        raise OptionError(f"--top-p must be above 0 and at most 1, not {r.top_p}")
    if r.max_tries is not None and r.max_tries < 1:
        raise OptionError(f"--max-tries must be at least 1, not {r.max_tries}")
    if r.patience is not None and not 0 < r.patience < math.inf:
        raise OptionError(f"--patience must be a number of seconds above 0, not {r.patience}")
    for flag, text in (("--prefix", r.prefix), ("--suffix", r.suffix)):
        bad = vocab.unknown(text)
        if bad:
            shown = "".join(vocab.show(c) for c in vocab.chars[1:])
            # exit 1 like every unseen-character error (issue 4), though it is refused before drawing too
            raise VocabularyError(f"{flag} has characters the model never saw: {''.join(map(vocab.show, bad))!r} "
                                  f"(its vocabulary: {shown!r})")
    if r.min_len < 0:
        raise OptionError(f"--min-len must be 0 or more, not {r.min_len}")
    if r.max_len is not None:
        if r.max_len < 1:
            raise OptionError(f"--max-len must be at least 1, not {r.max_len}")
        if r.min_len > r.max_len:
            raise OptionError(f"--min-len {r.min_len} is above --max-len {r.max_len}")
        for flag, text in (("--prefix", r.prefix), ("--suffix", r.suffix)):
            if len(text) > r.max_len:
                raise OptionError(f"{flag} {text!r} is longer than --max-len {r.max_len}")
    why = f"twice the longest training item{' plus the prefix' if r.prefix else ''}"
    if r.min_len > cap:
        raise MakemoreError(f"--min-len {r.min_len:,} is above the longest item this model draws, {cap:,} "
                            f"characters ({why})")
    if len(r.suffix) > cap:
        raise MakemoreError(f"--suffix is {len(r.suffix):,} characters, above the longest item this model draws, "
                            f"{cap:,} ({why})")
    notes = []
    if r.max_len is not None and r.max_len > cap:
        notes.append(f"note: --max-len {r.max_len:,} is above the longest item this model draws, {cap:,} "
                     f"characters ({why}); items are drawn up to {cap:,}")
    return (compile_regex(r.regex) if r.regex is not None else None), notes


class Samples(list):
    """The items drawn (a list of str), with the figures of how the drawing (a sampling.Sampler) went and, from a
    labelled model, the label each was drawn under."""

    def __init__(self, items, drawing, labels: list[str] | None = None):
        super().__init__(items)
        self.labels = labels  # each item's label (a labelled model), else None
        self.asked, self.draws, self.cap = drawing.request.n, drawing.draws, drawing.cap  # cap: the longest possible
        self.rejected = dict(drawing.rejected)  # reason (a key of REASONS) -> count
        self._report = drawing.report()

    @property
    def complete(self) -> bool:
        return len(self) >= self.asked

    @property
    def acceptance(self) -> float:
        return len(self) / self.draws if self.draws else 0.0

    def report(self) -> str:
        """One line: asked for 100, found 87 in 20,000 draws (acceptance 0.4%; 9,411 were in the data, ...)."""
        return self._report
