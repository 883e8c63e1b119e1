"""Mixed precision, gradient accumulation, a warmup-then-cosine schedule, and resume.

    python examples/amp_accumulation.py

On the digits data (see train_digits.py):

- ``Fp16OptimizerHook`` replaces the default optimizer hook: the forward runs under
  ``torch.autocast`` (bfloat16 on CPU, float16 on CUDA with a dynamic loss scale), the
  weights stay float32;
- ``cumulative_iters=4``: micro-batches of 16, one optimizer step every 4 of them (an
  effective batch of 64);
- the learning rate warms up linearly for the first iterations, then follows a cosine
  curve to the end: two schedulers, each active from its ``begin`` to its ``end``;
- the run is "interrupted" half-way (a hook stops it, as a preemption would), then the same
  configuration with ``resume=True`` continues from the last checkpoint to the end.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import torch
from torch import nn
from train_digits import DigitsCNN, accuracy, digits_loaders  # the same directory

import pluginloop
from pluginloop import Hook

ACCUMULATE = 4


class StopAfterEpoch(Hook):
    """Stands in for a preemption: stops the run after ``epoch`` epochs (after their checkpoint)."""

    priority = "LOWEST"  # after CheckpointHook (VERY_LOW) has saved the epoch

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_train_epoch(self, runner: pluginloop.Runner) -> None:
        """Ask the runner to stop once ``self.epoch`` epochs are done."""
        if runner.epoch + 1 >= self.epoch:
            runner.should_stop = True


def config(work_dir: str, epochs: int) -> dict[str, Any]:
    """The run's Runner arguments: a fresh model and loaders each time, as in a new process."""
    loaders = digits_loaders(batch_size=16)
    steps = epochs * len(loaders["train"])  # the schedule counts iterations (micro-batches)
    warmup = steps // 10
    torch.manual_seed(0)  # the model is built before the Runner seeds everything
    return dict(
        model=DigitsCNN(),
        work_dir=work_dir,
        train_dataloader=loaders["train"],
        val_dataloader=loaders["val"],
        test_dataloader=loaders["test"],
        loss_fn=nn.functional.cross_entropy,
        metrics={"acc": accuracy},
        optimizer=dict(type="AdamW", lr=4e-3, weight_decay=1e-4),
        scheduler=[
            dict(type="LinearLR", start_factor=0.1, total_iters=warmup, by_epoch=False, begin=0, end=warmup),
            dict(type="CosineAnnealingLR", T_max=steps - warmup, by_epoch=False, begin=warmup),
        ],
        max_epochs=epochs,
        default_hooks=dict(
            optimizer=dict(type="Fp16OptimizerHook", cumulative_iters=ACCUMULATE),
            checkpoint=dict(type="CheckpointHook", interval=1),
            logger=dict(type="LoggerHook", interval=40),
        ),
        seed=0,
        device="cpu",
    )


def main(argv: list[str] | None = None) -> pluginloop.Runner:
    """Run half, resume to the end, print what happened; returns the resumed runner."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("DIGITS_EPOCHS", 6)))
    parser.add_argument("--work-dir", default="work_dirs/amp_accumulation")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # a model this small runs fastest on one thread
    half = max(1, args.epochs // 2)

    print(f"== part 1: train, stopped after epoch {half} of {args.epochs}")
    first = pluginloop.Runner(**config(args.work_dir, args.epochs), custom_hooks=[StopAfterEpoch(half)])
    first.train()
    print(f"stopped at epoch {first.epoch}, iteration {first.iter}, "
          f"lr {first.optimizer.param_groups[0]['lr']:.2e}")  # type: ignore[union-attr]

    print(f"\n== part 2: the same configuration with resume=True, to epoch {args.epochs}")
    second = pluginloop.Runner(**config(args.work_dir, args.epochs), resume=True)
    second.train()
    test = second.test()
    lr = second.optimizer.param_groups[0]["lr"]  # type: ignore[union-attr]
    print(f"\nresumed from epoch {half} and finished at epoch {second.epoch} (iteration {second.iter}); "
          f"test acc {test['acc']:.4f}, final lr {lr:.2e}")
    return second


if __name__ == "__main__":
    main()
