"""What a sampling request asks, and how each drawn item is judged: shared by both samplers (no torch)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

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

# --top-p: the likelier tokens "reach" top_p when their sum is within a billionth of it. A counting model's
# probabilities are fractions whose sums often equal top_p exactly (3 tokens of 93/155 = 0.6); there the
# last bit of rounding, which differs between torch and plain Python, must not decide.
NUCLEUS_SLACK = 1 - 1e-9


class NothingFound(MakemoreError):
    """The budget of draws ran out before a single item met every constraint."""


def default_max_tries(n: int) -> int:
    """100 draws per item asked, at least 200,000 and at most 500,000: an acceptance of 1 in 20,000 still
    finds 10 items, and a hopeless request ends within seconds (200,000 draws of the MLP took 2.6 s on
    one busy core)."""
    return min(max(100 * n, 200_000), 500_000)


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
    max_len: int | None = None
    regex: str | None = None  # must match the whole item (re.fullmatch)
    new: bool = False  # reject items of the training data (any split)
    exclude: frozenset = frozenset()
    unique: bool = False
    max_tries: int | None = None  # None: default_max_tries(n)

    def budget(self) -> int:
        return self.max_tries if self.max_tries is not None else default_max_tries(self.n)

    def cap(self, default: int) -> int:
        """The longest item that can be drawn; default when there is no max_len."""
        return self.max_len if self.max_len is not None else max(default, self.min_len, len(self.prefix))

    def steps(self, default_cap: int) -> int:
        """Tokens to draw after the prefix: one more than the characters allowed, for the end."""
        return self.cap(default_cap) - len(self.prefix) + 1


def check(request: Request, vocab) -> re.Pattern | None:
    """Refuse, before any drawing, a request that can never be met; return the compiled regex."""
    r = request
    if r.n < 0:
        raise OptionError(f"-n must be 0 or more, not {r.n}")
    if not r.temperature > 0 or math.isinf(r.temperature):
        raise OptionError(f"--temperature must be above 0, not {r.temperature}")
    if r.top_k is not None and not 1 <= r.top_k <= len(vocab):
        raise OptionError(f"--top-k must be between 1 and the vocabulary size {len(vocab)}, not {r.top_k}")
    if r.top_p is not None and not 0 < r.top_p <= 1:
        raise OptionError(f"--top-p must be above 0 and at most 1, not {r.top_p}")
    if r.max_tries is not None and r.max_tries < 1:
        raise OptionError(f"--max-tries must be at least 1, not {r.max_tries}")
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
    if r.regex is None:
        return None
    try:
        return re.compile(r.regex)
    except re.error as e:
        raise OptionError(f"--regex {r.regex!r} is not a valid regular expression: {e}") from None


class Samples(list):
    """The items drawn (a list of str), with the figures of how the drawing went."""

    def __init__(self, items=(), asked: int = 0, draws: int = 0, rejected: dict | None = None, cap: int = 0):
        super().__init__(items)
        self.asked = asked
        self.draws = draws
        self.rejected = dict(rejected or {})  # reason (a key of REASONS) -> count
        self.cap = cap  # the longest item that could be drawn

    @property
    def complete(self) -> bool:
        return len(self) >= self.asked

    @property
    def acceptance(self) -> float:
        return len(self) / self.draws if self.draws else 0.0

    def report(self) -> str:
        """One line: asked for 100, found 87 in 20,000 draws (acceptance 0.4%; 9,411 were in the data, ...)."""
        pct = 100 * self.acceptance
        shown = "0" if pct == 0 else f"{pct:.1f}" if pct >= 0.1 else f"{pct:.2g}"
        parts = [f"{count:,} {REASONS[reason].format(cap=self.cap)}"
                 for reason, count in self.rejected.items() if count]
        details = "; " + ", ".join(parts) if parts else ""
        return (f"asked for {self.asked:,}, found {len(self):,} in {self.draws:,} draws "
                f"(acceptance {shown}%{details})")


class Tally:
    """The items drawn so far, in the order drawn, judged against a request: kept or rejected and why.

    Made before any drawing: it refuses (check) a request that can never be met. data_items: the items of
    the training data, for request.new.
    """

    def __init__(self, request: Request, vocab, data_items=frozenset()):
        self.pattern = check(request, vocab)
        self.request, self.data_items = request, data_items
        self.found: list[str] = []
        self.seen: set[str] = set()
        self.rejected = dict.fromkeys(REASONS, 0)
        self.draws = 0

    def going(self) -> bool:
        """Whether to draw again: fewer than n found and draws left in the budget."""
        return len(self.found) < self.request.n and self.draws < self.request.budget()

    def add(self, item: str, dead: bool, ended: bool) -> None:
        self.draws += 1
        reason = verdict(item, dead, ended, self.request, self.pattern, self.data_items, self.seen)
        if reason is None:
            self.found.append(item)
            if self.request.unique:
                self.seen.add(item)
        else:
            self.rejected[reason] += 1

    def result(self, default_cap: int) -> Samples:
        """The Samples; raises NothingFound when items were asked for and none was found."""
        r = self.request
        result = Samples(self.found, r.n, self.draws, self.rejected, r.cap(default_cap))
        if r.n and not self.found:
            raise NothingFound(result.report() + "; loosen the constraints or raise --max-tries")
        return result


def default_cap(items: list[str], prefix: str) -> int:
    """The longest item drawn without --max-len: twice the longest item of the data, plus the prefix."""
    return 2 * max(map(len, items), default=32) + len(prefix)


def verdict(item: str, dead: bool, ended: bool, r: Request, pattern, data_items, seen) -> str | None:
    """None when item meets every constraint, else the first reason (a key of REASONS) it fails."""
    if dead:
        return "dead_end"
    if not ended:
        return "too_long" if r.max_len is not None else "no_end"
    if r.suffix and not item.endswith(r.suffix):
        return "suffix"
    if pattern is not None and pattern.fullmatch(item) is None:
        return "regex"
    if r.new and item in data_items:
        return "in_data"
    if item in r.exclude:
        return "excluded"
    if r.unique and item in seen:
        return "repeat"
    return None
