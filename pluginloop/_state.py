"""What a checkpoint holds, and putting it back, so that a resumed run continues bit for bit.

A checkpoint is a dict of tensors and plain values only (it is loaded with
``weights_only=True``):

- ``meta``: counters (``epoch``, ``iter``, ``inner_iter``: iterations done in the epoch in
  progress), ``val_pending`` (saved at the end of a train epoch whose validation had not run
  yet: a resume runs it first), seed, world size, torch version;
- ``state_dict`` (model parameters and buffers), ``optimizer``, ``param_schedulers``;
- ``message_hub``; ``hooks``: each stateful hook's ``state_dict()`` by registered name (the
  gradient scaler, an open accumulation window's gradients, the best score, ...);
- ``rng``: per global rank, the Python, NumPy, torch CPU and CUDA generator states;
- ``sampler``: the train sampler's seed, epoch and batches done (see ``pluginloop._resume``).

Random state is restored where the interrupted run stood when it saved: at an epoch boundary
right away, inside an epoch only once the data iterator is positioned (see
``Runner._train_batches``). Validation inside training runs on a copy of the random state
(:func:`training_rng_kept`), so that a resume which skips or repeats it draws the same numbers.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from pluginloop import _resume, dist
from pluginloop.dist import unwrap_model
from pluginloop.errors import CheckpointError

if TYPE_CHECKING:
    from pluginloop.runner import Runner

__all__ = [
    "apply_rng",
    "capture_rng",
    "check_plain",
    "collect",
    "model_weights",
    "position",
    "restore",
    "restore_rng",
    "restore_weights",
    "training_rng_kept",
]

RngState = dict[str, Any]


def capture_rng() -> RngState:
    """This process's random state: Python, NumPy, torch CPU and every initialised CUDA device.

    NumPy's key array is stored as a tensor: ``weights_only`` loading refuses numpy arrays.
    """
    kind, keys, pos, has_gauss, cached = cast(tuple[str, Any, int, int, float], np.random.get_state())
    state: RngState = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    # Only devices already in use: querying them must not create a CUDA context.
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def apply_rng(state: RngState) -> None:
    """Put back what :func:`capture_rng` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    # .cpu(): a checkpoint loaded with map_location=cuda has its tensors on the GPU.
    np.random.set_state((kind, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
        else:
            warnings.warn(f"resume: the checkpoint holds the random state of {len(cuda)} CUDA devices and "
                          f"this machine has {torch.cuda.device_count()}; CUDA random numbers will differ "
                          "from the interrupted run", stacklevel=2)


@contextlib.contextmanager
def training_rng_kept(runner: Runner) -> Iterator[None]:
    """Run the block (validation inside training) on a copy of the random state.

    Whatever the block draws, training continues with the numbers it would have drawn
    without it; a checkpoint written inside the block records the training state.
    """
    saved = capture_rng()
    runner._train_rng = saved
    try:
        yield
    finally:
        runner._train_rng = None
        apply_rng(saved)


def _gather_rng(runner: Runner) -> dict[int, RngState]:
    """Every rank's training random state, keyed by global rank (a collective when distributed)."""
    own = runner._train_rng if runner._train_rng is not None else capture_rng()
    if not dist.is_distributed():
        return {runner.rank: own}
    states: list[Any] = [None] * dist.get_world_size()
    torch.distributed.all_gather_object(states, own)
    return dict(enumerate(states))


def position(runner: Runner) -> tuple[int, int, int, bool]:
    """Where the loop stands, as a checkpoint records it: (epochs, iters, iters in epoch, val pending).

    Two saves at one position hold the same training state.
    """
    epoch, iteration, inner = runner._completed()
    return epoch, iteration, inner, bool(runner._epoch_done and runner._val_due(epoch))


def collect(runner: Runner, save_optimizer: bool = True) -> dict[str, Any]:
    """The complete checkpoint dict of ``runner`` at the current loop position.

    Call it on every rank: in a distributed run it gathers each rank's random state.
    """
    epoch, iteration, inner, val_pending = position(runner)
    state: dict[str, Any] = {
        "meta": {
            "epoch": epoch,
            "iter": iteration,
            "inner_iter": inner,
            "val_pending": val_pending,
            "seed": runner.seed,
            "world_size": runner.world_size,
            "torch_version": str(torch.__version__),  # a str subclass weights_only refuses
        },
        "state_dict": unwrap_model(runner.model).state_dict(),
        "message_hub": runner.message_hub.state_dict(),
        "hooks": {
            name: hook.state_dict()
            for name, hook in cast(list[tuple[str, Any]], runner._pm.list_name_plugin())
            if callable(getattr(hook, "state_dict", None))
        },
        "rng": _gather_rng(runner),
        # The epoch in progress is `epoch` (completed epochs, from 0), `inner` batches into it.
        "sampler": _resume.sampler_state(runner.train_dataloader, runner.seed, epoch, inner),
    }
    if save_optimizer and runner.optimizer is not None:
        state["optimizer"] = runner.optimizer.state_dict()
        state["param_schedulers"] = [s.scheduler.state_dict() for s in runner.param_schedulers]
    return state


# What torch's weights_only unpickler accepts (torch/_weights_only_unpickler.py), exact types:
# a subclass of str or dict (torch.__version__, defaultdict) is refused.
_LEAVES = (str, int, float, bool, complex, bytes, bytearray, type(None),
           torch.dtype, torch.device, torch.Size)
_CONTAINERS = (dict, OrderedDict, Counter, list, tuple, set)


def check_plain(state: Any, where: str = "checkpoint") -> None:
    """Fail unless ``state`` holds only what a ``weights_only=True`` load accepts.

    Tensors and plain values in dicts, lists, tuples and sets; anything else (a numpy
    array, a Path, a str subclass, a function) would save fine and then refuse to load at
    resume, so it is caught now, with its key path.
    """
    if isinstance(state, torch.Tensor) or type(state) in _LEAVES:
        return
    if any(type(state) is allowed for allowed in torch.serialization.get_safe_globals()):
        return  # a class the user allowlisted with torch.serialization.add_safe_globals
    if type(state) in _CONTAINERS:
        items = state.items() if isinstance(state, dict) else enumerate(state)
        for key, value in items:
            check_plain(key, f"{where} (a key)")
            check_plain(value, f"{where}[{key!r}]")
        return
    raise CheckpointError(
        f"{where} is a {type(state).__module__}.{type(state).__qualname__}: checkpoints hold only "
        "tensors and plain Python values (they are loaded with weights_only=True, so that loading "
        "cannot run code); convert it (a numpy array with torch.from_numpy, a Path with str) in the "
        "state_dict() that made it"
    )


def model_weights(checkpoint: Mapping[str, Any]) -> Mapping[str, Any]:
    """The model state dict inside ``checkpoint``: pluginloop's / MMEngine's ``state_dict``,
    a ``model`` entry, or the dict itself when it is a bare ``model.state_dict()``."""
    for key in ("state_dict", "model"):
        if isinstance(checkpoint.get(key), Mapping):
            weights: Mapping[str, Any] = checkpoint[key]
            return weights
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    raise CheckpointError(
        "found no model weights: expected a 'state_dict' or 'model' entry, or a bare "
        f"model.state_dict(); the checkpoint has {', '.join(map(repr, list(checkpoint)[:8]))}"
    )


def restore_weights(runner: Runner, checkpoint: dict[str, Any], strict: bool = True) -> None:
    """Load the model weights of ``checkpoint`` (``load_from``)."""
    unwrap_model(runner.model).load_state_dict(model_weights(checkpoint), strict=strict)


def restore(runner: Runner, checkpoint: dict[str, Any]) -> None:
    """Put back everything ``collect`` saved (``resume``), hooks' states included.

    The random state is not applied here but left in ``runner._pending_rng`` for
    :func:`restore_rng`, because where it must be applied depends on the position.
    """
    if runner.optimizer is not None and "optimizer" not in checkpoint:
        raise CheckpointError("the checkpoint has no optimizer state (it was saved with "
                              "save_optimizer=False), so training cannot resume from it; use "
                              "load_from= to start from its weights")
    restore_weights(runner, checkpoint)
    if runner.optimizer is not None:
        runner.optimizer.load_state_dict(checkpoint["optimizer"])
        for entry, sd in zip(runner.param_schedulers, checkpoint.get("param_schedulers", []), strict=False):
            entry.scheduler.load_state_dict(sd)
    meta = checkpoint["meta"]
    runner.epoch, runner.iter = meta["epoch"], meta["iter"]
    runner._resume_inner = meta.get("inner_iter", 0)
    empty_hub: dict[str, dict[str, Any]] = {"latest": {}, "sums": {}, "counts": {}}
    runner.message_hub.load_state_dict(checkpoint.get("message_hub", empty_hub))
    _restore_sampling(runner, checkpoint)
    _restore_hooks(runner, dict(checkpoint.get("hooks", {})))


def _restore_sampling(runner: Runner, checkpoint: dict[str, Any]) -> None:
    sampler = checkpoint.get("sampler", {})
    seed = sampler.get("seed", checkpoint["meta"].get("seed", runner.seed))
    if seed != runner.seed:
        # The orders of the remaining epochs come from the seed the run started with.
        runner.logger.info("resume: continuing with the checkpoint's seed %d (this runner was given %d)",
                           seed, runner.seed)
        runner.seed = seed
    _resume.restore(runner.train_dataloader, sampler, seed)
    _resume.check_compatible(runner.train_dataloader, sampler, runner.logger)
    states = checkpoint.get("rng", {})
    runner._pending_rng = states.get(runner.rank, states.get(0))
    if runner._pending_rng is None:
        runner.logger.warning("resume: the checkpoint holds no random state; dropout and shuffling from "
                              "here on differ from the interrupted run")


def restore_rng(runner: Runner) -> None:
    """Apply the random state a resume left pending (once)."""
    if runner._pending_rng is not None:
        state, runner._pending_rng = runner._pending_rng, None
        apply_rng(state)


def _restore_hooks(runner: Runner, saved: dict[str, Any]) -> None:
    for name, hook in cast(list[tuple[str, Any]], runner._pm.list_name_plugin()):
        if not callable(getattr(hook, "load_state_dict", None)):
            continue
        if name in saved:
            hook.load_state_dict(saved.pop(name))
        else:
            warnings.warn(f"resume: the checkpoint has no state for hook {name!r}; it starts fresh",
                          stacklevel=3)
    for name in saved:
        warnings.warn(f"resume: the checkpoint holds state of hook {name!r}, which is not registered; "
                      "it is ignored", stacklevel=3)
