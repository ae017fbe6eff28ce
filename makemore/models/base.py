"""What every model shares: a config dataclass, forward (a training batch -> logits), next_logits (for sampling,
scoring and mixtures), and the hooks a model may provide, each with its default here."""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from makemore import options
from makemore.errors import OptionError


class Model(nn.Module):
    """Subclasses set Config (a dataclass of makemore.options.option fields: the CLI's flags) and forward:
    (B, block_size) contexts and their labels (B,) -> (B, vocab_size) logits. The shared loop trains them; a
    counting model (counts = True) is fitted in one pass by fit(dataset) and returns log-probabilities as logits.
    A model of n_labels > 1 labels conditions every prediction on the label; one of a single label (an unlabelled
    file) has no label weights and is given label None."""

    name: ClassVar[str]
    Config: ClassVar[type]
    # fitted in one pass by fit() instead of by the optimizer
    counts: ClassVar[bool] = False
    # the loop's settings that suit this model (makemore.train.TrainConfig's fields); the user's flags win
    train_defaults: ClassVar[dict] = {}
    # the fewest examples a training batch may hold (BatchNorm needs two values per channel to normalise)
    min_batch_size: ClassVar[int] = 1
    # trained and evaluated on rows of whole items, every position at once (SequenceModel)
    whole_items: ClassVar[bool] = False
    # AdamW's betas (makemore.train.make_optimizer): torch's defaults unless a model's recipe says otherwise
    adam_betas: ClassVar[tuple[float, float]] = (0.9, 0.999)
    # a time budget (train --time) buys at most BUDGET_EPOCHS passes over the training rows, and at least
    # BUDGET_MIN_STEPS steps (budget_steps): past its passes a model's kept weights got no better on the lecture's
    # names, and the rnn's worse (dev 1.9984 after 30 passes, 2.0342 after 470; BENCHMARKS.md, time budgets)
    BUDGET_EPOCHS: ClassVar[float] = 30
    BUDGET_MIN_STEPS: ClassVar[int] = 2000

    def __init__(self, config, vocab_size: int, n_labels: int = 1):
        super().__init__()
        self.check_config(config, vocab_size)
        self.config = config
        self.vocab_size = vocab_size
        self.n_labels = n_labels

    @property
    def device(self) -> torch.device:
        """Where the model's tensors are."""
        return next(iter(self.state_dict().values())).device

    @property
    def block_size(self) -> int:
        """How many previous tokens a forward pass reads."""
        return self.config.block_size

    def uses_labels(self, label: torch.Tensor | None) -> bool:
        """Whether forward conditions on the labels (a model of more than one label); ValueError when it would but
        was given none."""
        if self.n_labels == 1:
            return False
        if label is None:
            raise ValueError(f"a {self.name} model of {self.n_labels} labels needs each example's label")
        return True

    def forward(self, idx: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError  # (B, block_size), (B,) -> (B, vocab_size)

    def next_logits(self, windows: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        """The logits of the token after each window, (B, T) -> (B, vocab_size), reading its last block_size
        tokens (T >= block_size): what sampling, scoring and mixtures read. A window model's forward is this."""
        return self(windows[:, windows.shape[1] - self.block_size:], label)

    # ---- hooks with defaults ----

    @classmethod
    def config_from(cls, values: dict, complete: bool = False):
        """The Config from option values (names as the fields), each checked where it is declared;
        OptionError for a value or a name the model does not take, or (complete) one it lacks."""
        return options.make(cls.Config, values, what=f"--model {cls.name}", complete=complete)

    @classmethod
    def config_for_data(cls, config, given: dict, items: list[str], vocab_size: int):
        """The config to train on these training items, given the options the user gave (names as the fields):
        where a default depends on the data, it is set here."""
        return config

    @classmethod
    def check_config(cls, config, vocab_size: int) -> None:
        """Raise OptionError for a config that cannot work with this vocabulary size (checks that involve
        more than one field, or the data); called before anything is allocated."""

    @classmethod
    def on_meta(cls, config, vocab_size: int, n_labels: int = 1) -> Model:
        """The model on the meta device: every tensor's dtype and shape, without memory or numbers."""
        with torch.device("meta"), WithoutRandomFills():
            return cls(config, vocab_size, n_labels)

    @classmethod
    def expected_tensors(cls, config, vocab_size: int, n_labels: int = 1) -> dict[str, tuple[torch.dtype, tuple]]:
        """The state_dict this config gives: name -> (dtype, shape), where dtype may be a tuple of the dtypes
        allowed and None in a shape is a size that depends on the data."""
        model = cls.on_meta(config, vocab_size, n_labels)
        return {name: (t.dtype, tuple(t.shape)) for name, t in model.state_dict().items()}

    @classmethod
    def expected_parameters(cls, config, vocab_size: int, n_labels: int = 1) -> list[tuple[torch.dtype, tuple]]:
        """The trainable parameters as (dtype, shape), in the order of model.parameters()."""
        model = cls.on_meta(config, vocab_size, n_labels)
        return [(p.dtype, tuple(p.shape)) for p in model.parameters() if p.requires_grad]

    @classmethod
    def expected_groups(cls, config, vocab_size: int, n_labels: int = 1) -> list[list[int]]:
        """The optimizer's parameter groups (parameter_groups) as positions in expected_parameters."""
        model = cls.on_meta(config, vocab_size, n_labels)
        position = {id(p): i for i, p in enumerate(p for p in model.parameters() if p.requires_grad)}
        return [[position[id(p)] for p in group] for group, _ in model.parameter_groups()]

    @classmethod
    def from_state(cls, config, vocab_size: int, *states: dict, n_labels: int = 1) -> Model:
        """The model with the tensors of states (state_dicts, loaded in turn: the last one stays), built on their
        device without drawing the weights they replace; RuntimeError for a state that does not fit."""
        device = next(iter(states[-1].values())).device if states and states[-1] else torch.device("cpu")
        with torch.device(device), WithoutRandomFills():
            model = cls(config, vocab_size, n_labels)
        for state in states:
            model.load_state_dict(state, assign=True)
        return model

    @classmethod
    def example_numbers(cls, config, vocab_size: int) -> int:
        """Roughly the numbers one training example occupies in a step (activations, gradients): the memory check's."""
        return 4 * (config.block_size + vocab_size)

    @classmethod
    def train_defaults_for(cls, n_examples: int, batch_size: int) -> dict:
        """Training settings that follow the data size (TrainConfig field -> value), used where the user gave none."""
        return {}

    def decayed(self, name: str, parameter: nn.Parameter) -> bool:
        """Whether the optimizer's weight decay acts on this trained parameter (by default every one does)."""
        return True

    def parameter_groups(self) -> list[tuple[list[nn.Parameter], bool]]:
        """The trained parameters as the optimizer's groups, each with whether it is decayed: the decayed ones,
        then the others (a group only where it has parameters), each in the order of parameters()."""
        trained = [(name, p) for name, p in self.named_parameters() if p.requires_grad]
        flags = [self.decayed(name, p) for name, p in trained]
        groups = [([p for (_, p), flag in zip(trained, flags) if flag == decays], decays) for decays in (True, False)]
        return [(params, decays) for params, decays in groups if params]

    def fit(self, dataset) -> None:
        """Counting models: fit the counts in one pass over the dataset."""
        raise NotImplementedError(f"{self.name} is trained by gradient descent, not counted")

    def embeddings(self) -> torch.Tensor | None:
        """The (vocab_size, n_embd) table of character embeddings that `plot embeddings` draws, or None."""
        return None

    def bigram_counts(self) -> torch.Tensor | None:
        """The (vocab_size, vocab_size) counts N[prev, next] that `plot counts` draws, or None (a model with
        one character of context then has its probabilities drawn instead)."""
        return None


def next_log_probs(model: Model, windows: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
    """(B, vocab_size) float64: the model's log-probabilities of the token after each window (next_logits)."""
    return torch.log_softmax(model.next_logits(windows, label).double(), dim=-1)


def label_table(n_labels: int, *shape: int) -> nn.Parameter | None:
    """A (n_labels, *shape) table of what each label adds, zero at first (the model starts as if unlabelled, and
    draws no random numbers for it); None for one label: an unlabelled model has no label weights."""
    return nn.Parameter(torch.zeros(n_labels, *shape)) if n_labels > 1 else None


def by_label(table: torch.Tensor | None, label: torch.Tensor | None) -> torch.Tensor | float:
    """Each example's row of a label table (B, width), or 0 without a table (one label)."""
    if table is None:
        return 0.0
    if label is None:
        raise ValueError("a labelled model needs each example's label")
    return table[label]


def on_meta_device() -> bool:
    """Whether the model is being built on the meta device (Model.on_meta): a buffer it does not save may be
    skipped there, since some operations on meta tensors import torch's compiler (see WithoutRandomFills)."""
    return torch.get_default_device().type == "meta"


class WithoutRandomFills(TorchFunctionMode):
    """While a model is built only to have its weights replaced (or on the meta device, for their shapes):
    nn.init's functions and the random fills do nothing, torch.randn makes an empty tensor. On the meta device
    normal_ would import torch's compiler (dynamo): about a second of every command that loads a checkpoint."""

    INITS = frozenset(getattr(nn.init, name) for name in dir(nn.init) if name.endswith("_") and name[0] != "_")
    FILLS = frozenset({torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.exponential_,
                       torch.Tensor.log_normal_, torch.Tensor.cauchy_, torch.Tensor.geometric_,
                       torch.Tensor.random_, torch.Tensor.bernoulli_})
    FACTORIES = frozenset({torch.randn, torch.rand})

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.INITS or func in self.FILLS:
            filled = kwargs.get("tensor", args[0] if args else None)
            if isinstance(filled, torch.Tensor):
                return filled
        elif func in self.FACTORIES:
            return torch.empty(*args, **{k: v for k, v in kwargs.items() if k != "generator"})
        return func(*args, **kwargs)


def item_context():
    """The block_size option of a SequenceModel: 0, its default, stands for the longest training item."""
    return options.option(0, "Longest context read: the item so far up to this many tokens (0: the longest "
                          "training item and its boundary token).", low=0, high=1024)


class SequenceModel(Model):
    """A model that reads an item left to right from its boundary token, trained and evaluated on rows of whole
    items: forward (B, T) -> (B, T, vocab_size), causal, for any T up to block_size. next_logits reads each
    window from its item's start (its last boundary token; a window without one, from its first token)."""

    whole_items = True
    # without --steps: EPOCHS passes over the training rows (one per item) within these bounds, so that a small file
    # trains long enough to learn (the best-on-dev weights guard against overfitting) and a large one not for hours
    EPOCHS: ClassVar[float] = 30
    MIN_STEPS: ClassVar[int] = 2000
    MAX_STEPS: ClassVar[int] = 50000

    @classmethod
    def train_defaults_for(cls, n_examples: int, batch_size: int) -> dict:
        return dict(steps=steps_for_epochs(cls, n_examples, batch_size))

    @classmethod
    def config_for_data(cls, config, given: dict, items: list[str], vocab_size: int):
        if config.block_size:
            return config
        high = options.declared(cls.Config)["block_size"][0].high
        return dataclasses.replace(config, block_size=min(high, max(map(len, items), default=0) + 1))

    @classmethod
    def check_config(cls, config, vocab_size: int) -> None:
        if config.block_size < 1:  # 0 is replaced by config_for_data before a model is built
            raise OptionError(f"--block-size {config.block_size}: a built {cls.name} reads at least 1 token")

    def next_logits(self, windows: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        windows = windows[:, windows.shape[1] - self.block_size:]
        B, T = windows.shape
        column = torch.arange(T, device=windows.device)
        start = torch.where(windows == 0, column, 0).amax(1)  # (B,) each window's last boundary token
        # each row moved left so that its item starts at column 0; what lands after its end is never read
        # by the positions before it, and only as many columns are read as the longest item so far needs
        width = T - int(start.min())
        rows = windows.gather(1, (column[:width] + start[:, None]).clamp_(max=T - 1))
        return self(rows, label)[torch.arange(B, device=windows.device), T - 1 - start]


def steps_for_epochs(cls, n_examples: int, batch_size: int) -> int:
    """cls.EPOCHS passes over n_examples in batches of batch_size, but from cls.MIN_STEPS to cls.MAX_STEPS steps."""
    return int(min(cls.MAX_STEPS, max(cls.MIN_STEPS, round(cls.EPOCHS * n_examples / batch_size))))


def budget_steps(cls, n_examples: int, batch_size: int) -> int:
    """The most steps a time budget buys cls on n_examples training rows in batches of batch_size."""
    return int(max(cls.BUDGET_MIN_STEPS, math.ceil(cls.BUDGET_EPOCHS * n_examples / batch_size)))


def config_dict(config) -> dict:
    """A config as plain JSON values (tuples as lists), as checkpoints record it."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}
