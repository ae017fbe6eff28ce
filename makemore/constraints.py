"""What a sampling request asks, and how each drawn item is judged (no torch: the CLI checks --regex with it)."""
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

# --top-p: the likelier tokens "reach" top_p when their sum is within a billionth of it. A counting model's
# probabilities are fractions whose sums often equal top_p exactly (3 tokens of 93/155 = 0.6); there the
# last bit of rounding, which differs between torch and plain Python, must not decide.
NUCLEUS_SLACK = 1 - 1e-9

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
    """The items drawn (a list of str), with the figures of how the drawing went."""

    def __init__(self, items, tally: Tally):
        super().__init__(items)
        self.asked, self.draws, self.cap = tally.request.n, tally.draws, tally.cap  # cap: the longest item possible
        self.rejected = dict(tally.rejected)  # reason (a key of REASONS) -> count
        self._report = tally.report()

    @property
    def complete(self) -> bool:
        return len(self) >= self.asked

    @property
    def acceptance(self) -> float:
        return len(self) / self.draws if self.draws else 0.0

    def report(self) -> str:
        """One line: asked for 100, found 87 in 20,000 draws (acceptance 0.4%; 9,411 were in the data, ...)."""
        return self._report


class Tally:
    """How the drawing of a request goes: the items judged so far, counted as kept or rejected and why. Holds
    no kept item (a stream of them may be endless), only --unique's seen set. Refuses, when made, a request
    that can never be met. cap: the model's length cap (length_cap); data_items: the data's, for request.new."""

    def __init__(self, request: Request, vocab, cap: int, data_items=frozenset()):
        self.pattern, self.notes = check(request, vocab, cap)
        self.request, self.data_items = request, data_items
        self.cap = min(request.max_len, cap) if request.max_len is not None else cap
        self.found = self.draws = 0
        self.seen: set[str] = set()
        self.rejected = dict.fromkeys(REASONS, 0)
        self.timed_out: tuple[int, int] | None = None  # when stopped for time: draws cut short, at what length

    def steps(self) -> int:
        """Tokens to draw after the prefix: one more than the characters allowed, for the end."""
        return self.cap - len(self.request.prefix) + 1

    def going(self) -> bool:
        """Whether to draw again: fewer than n found, draws left in the budget and time left."""
        return self.found < self.request.n and self.draws < self.request.budget() and self.timed_out is None

    def add(self, item: str, dead: bool, ended: bool) -> bool:
        """Judge one more draw; whether it is kept."""
        self.draws += 1
        reason = self._verdict(item, dead, ended)
        if reason is not None:
            self.rejected[reason] += 1
            return False
        self.found += 1
        if self.request.unique:
            self.seen.add(item)
        return True

    def _verdict(self, item: str, dead: bool, ended: bool) -> str | None:
        """None when item meets every constraint, else the first reason it fails (a key of REASONS)."""
        r = self.request
        if dead:
            return "dead_end"
        if not ended:
            # a --max-len above the cap: what the cap cut did not end within it, not longer than asked
            return "too_long" if r.max_len is not None and r.max_len <= self.cap else "no_end"
        if r.suffix and not item.endswith(r.suffix):
            return "suffix"
        if self.pattern is not None and self.pattern.fullmatch(item) is None:
            return "regex"
        if r.new and item in self.data_items:
            return "in_data"
        if item in r.exclude:
            return "excluded"
        if r.unique and item in self.seen:
            return "repeat"
        return None

    def stop_for_time(self, going: int = 0, length: int = 0) -> None:
        """Stop: no item found for request.patience seconds; going draws cut short at length characters."""
        self.timed_out = (going, length)

    @property
    def complete(self) -> bool:
        return self.found >= self.request.n

    def report(self) -> str:
        """One line: asked for 100, found 87 in 20,000 draws (acceptance 0.4%; 9,411 were in the data, ...),
        and when drawing stopped for time, after how long (and how far the draws cut short had gone)."""
        pct = 100 * self.found / self.draws if self.draws else 0.0
        shown = "0" if pct == 0 else f"{pct:.1f}" if pct >= 0.1 else f"{pct:.2g}"
        parts = [f"{n:,} {REASONS[reason].format(cap=self.cap)}" for reason, n in self.rejected.items() if n]
        stopped = ""
        if self.timed_out is not None:
            stopped = f", stopped after {self.request.patience:g} s without a new item"
            going, length = self.timed_out
            if going and not self.draws:  # nothing else says why: a batch of long draws took all the time
                parts.append(f"{going:,} cut short at {length:,} character{'s' * (length != 1)}")
        details = "; " + ", ".join(parts) if parts else ""
        return (f"asked for {self.request.n:,}, found {self.found:,} in {self.draws:,} draws{stopped} "
                f"(acceptance {shown}%{details})")

    def check_found(self) -> None:
        """Raise NothingFound when items were asked for and none was found."""
        if self.request.n and not self.found:
            more = "--patience" if self.timed_out is not None else "--max-tries"
            raise NothingFound(f"{self.report()}; loosen the constraints or raise {more}")

    def samples(self, items: list[str]) -> Samples:
        """The Samples of the items kept; raises NothingFound when items were asked for and none was found."""
        self.check_found()
        return Samples(items, self)
