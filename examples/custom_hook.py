"""Write a hook: the design document's ``CheckInvalidLossHook``, registered and configured.

    python examples/custom_hook.py

A hook is a ``Hook`` subclass that overrides the methods named after hook points (no
decorator). ``@HOOKS.register_module()`` makes its class name usable as ``type`` in a config;
``custom_hooks`` registers it with its arguments and, optionally, a priority.

The script trains the digits model briefly with the hook on, shows where the hook runs among
the built-ins, then feeds one batch of NaN images to show the hook stopping the run with a
message that names the hook, the hook point, the epoch and the iteration.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from train_digits import DigitsCNN, accuracy, digits_loaders  # the same directory

import pluginloop
from pluginloop import HOOKS, Hook, HookCallError


@HOOKS.register_module()
class CheckInvalidLossHook(Hook):
    """Check that the loss is finite every ``interval`` training iterations.

    The design document writes ``assert torch.isfinite(...), runner.logger.info(...)``; an
    assert disappears under ``python -O`` and its message would be ``None``, so this version
    raises an error that says what happened and where.
    """

    def __init__(self, interval: int = 50) -> None:
        self.interval = interval

    def after_train_iter(
        self, runner: pluginloop.Runner, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        """Raise FloatingPointError when this iteration's loss is NaN or infinite."""
        if self.every_n_iters(runner, self.interval):
            loss = runner.outputs["loss"]
            if not torch.isfinite(loss):
                # The runner adds the hook, the hook point, the epoch and the iteration.
                raise FloatingPointError(
                    f"the training loss is {loss.item()}: check this batch's data and the learning rate"
                )


def poisoned(loader: DataLoader[Any], batch: int) -> DataLoader[Any]:
    """A copy of ``loader`` (unshuffled) whose batch number ``batch`` holds NaN images."""
    images, labels = (t.clone() for t in loader.dataset.tensors)  # type: ignore[attr-defined]
    size = loader.batch_size or 1
    images[batch * size: (batch + 1) * size] = float("nan")
    return DataLoader(TensorDataset(images, labels), batch_size=size)


def main(argv: list[str] | None = None) -> None:
    """Train with the hook on, then show it catching a NaN loss."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("DIGITS_EPOCHS", 2)))
    parser.add_argument("--work-dir", default="work_dirs/custom_hook")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a model this small runs fastest on one thread
    loaders = digits_loaders()
    common: dict[str, Any] = dict(
        loss_fn=nn.functional.cross_entropy, metrics={"acc": accuracy},
        optimizer=dict(type="AdamW", lr=3e-3), seed=0, device="cpu",
        default_hooks=dict(checkpoint=None, logger=dict(type="LoggerHook", interval=20)),
    )

    # 1. The design document's configuration: every 50 iterations, priority ABOVE_NORMAL (40):
    #    after the optimizer step (HIGH, 30), before the timer and logger (NORMAL, BELOW_NORMAL).
    custom_hooks = [dict(type="CheckInvalidLossHook", interval=50, priority="ABOVE_NORMAL")]
    torch.manual_seed(0)  # the model is built before the Runner seeds everything
    runner = pluginloop.train(
        model=DigitsCNN(), work_dir=args.work_dir, train_dataloader=loaders["train"],
        val_dataloader=loaders["val"], max_epochs=args.epochs, custom_hooks=custom_hooks, **common,
    )
    print("\nafter_train_iter runs, in order:", ", ".join(runner.get_hooks_info()["after_train_iter"]))

    # 2. A batch of NaN images: the hook (checking every iteration here) stops the run.
    bad = poisoned(loaders["train"], batch=3)
    try:
        pluginloop.train(
            model=DigitsCNN(), work_dir=args.work_dir, train_dataloader=bad, max_epochs=1,
            custom_hooks=[dict(type="CheckInvalidLossHook", interval=1, priority="ABOVE_NORMAL")], **common,
        )
    except HookCallError as exc:
        print(f"\nthe poisoned run stopped as it should:\n  {exc}")
    else:
        raise SystemExit("the NaN batch was not caught")


if __name__ == "__main__":
    main()
