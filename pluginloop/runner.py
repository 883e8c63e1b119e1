"""The Runner: state, construction from configs, and the loop that fires the 16 hook points."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import torch
from torch import nn

from pluginloop import _state, checkpoint, dist
from pluginloop._build import build_optimizer, build_schedulers, hook_configs
from pluginloop._data import MetricMeter, forward, to_device
from pluginloop._manager import PluginManager
from pluginloop.errors import ConfigError, HookCallError
from pluginloop.hooks import DEFAULT_HOOKS
from pluginloop.hookspecs import HOOK_POINTS
from pluginloop.hub import MessageHub
from pluginloop.priority import PriorityLike
from pluginloop.registry import HOOKS

__all__ = ["Runner", "train"]


class Runner:
    """Runs train / validation / test of ``model`` and fires the hook points around each step.

    See the README for every argument; configs (dicts) are built and checked here, so a
    mistake fails now, before any data is read.
    """

    def __init__(
        self,
        model: nn.Module,
        work_dir: str | os.PathLike[str] = "work_dirs",
        train_dataloader: Any = None,
        val_dataloader: Any = None,
        test_dataloader: Any = None,
        optimizer: Any = None,
        scheduler: Any = None,
        param_scheduler: Any = None,
        loss_fn: Callable[..., Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        max_epochs: int | None = None,
        max_iters: int | None = None,
        val_interval: int = 1,
        default_hooks: Mapping[str, Any] | None = None,
        custom_hooks: Any = None,
        load_from: str | os.PathLike[str] | None = None,
        resume: bool | str | os.PathLike[str] = False,
        seed: int | None = None,
        device: str | torch.device | None = None,
        launcher: str = "auto",
        backend: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"expected a torch.nn.Module, got {type(model).__name__}", "model")
        if scheduler is not None and param_scheduler is not None:
            raise ConfigError("give scheduler= or its alias param_scheduler=, not both", "param_scheduler")
        for key, value in (("max_epochs", max_epochs), ("max_iters", max_iters), ("val_interval", val_interval)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"must be a positive int, got {value!r}", key)
        if train_dataloader is not None and max_epochs is None and max_iters is None:
            raise ConfigError("training needs a length: pass max_epochs= or max_iters=", "max_epochs")
        self._dist = dist.setup(launcher, backend, device)
        self.rank, self.world_size, self.device = self._dist.rank, self._dist.world_size, self._dist.device
        self.logger = _make_logger(self.rank)
        self.work_dir = Path(work_dir)
        self.seed = _seed_everything(seed)
        self.model = model.to(self.device)
        self.optimizer = build_optimizer(optimizer, self.model)
        self.param_schedulers = build_schedulers(scheduler if scheduler is not None else param_scheduler,
                                                 self.optimizer)
        self.wrapped_model = dist.wrap_model(self.model, self._dist)
        self.loss_fn = loss_fn
        self._meter = MetricMeter(metrics or {})
        self.train_dataloader = self._shard(train_dataloader, train=True)
        self.val_dataloader = self._shard(val_dataloader, train=False)
        self.test_dataloader = self._shard(test_dataloader, train=False)
        self.max_iters = max_iters if max_iters is not None else math.inf
        if max_epochs is None and max_iters is not None and self.train_dataloader is not None:
            max_epochs = math.ceil(max_iters / len(self.train_dataloader))
        self.max_epochs = max_epochs or 0
        self.val_interval = val_interval
        self.load_from, self.resume = load_from, resume
        self.epoch = self.iter = 0
        self.should_stop = False
        self.outputs: dict[str, Any] = {}
        self.message_hub = MessageHub()
        #: Context-manager factories entered around every forward pass (e.g. autocast).
        self.forward_contexts: list[Callable[[], contextlib.AbstractContextManager[Any]]] = []
        self._resume_inner = self._inner_done = 0
        self._iter_done = self._epoch_done = False
        self._pm = PluginManager()
        self.hook = self._pm.hook
        for key, cfg in hook_configs(DEFAULT_HOOKS, default_hooks, custom_hooks):
            self.register_hook(cfg, key=key)

    # -- plugins ------------------------------------------------------------------------

    def register_hook(
        self, hook: Any, priority: PriorityLike | None = None, name: str | None = None, key: str = "hook"
    ) -> str:
        """Register a Hook, a pluggy-style plugin (object or module) or a hook config dict.

        ``priority`` overrides the hook's own; returns the name it was registered under
        (its class name, made unique). Its state is saved in checkpoints under that name.
        """
        if isinstance(hook, type) and issubclass(hook, object) and hasattr(hook, "hook_points"):
            hook = hook()
        obj = HOOKS.build(hook, key=key) if isinstance(hook, Mapping) else hook
        base = name or getattr(obj, "__name__", None) or type(obj).__name__
        unique, n = base, 1
        while self._pm.has_plugin(unique) and name is None:
            unique, n = f"{base}-{n}", n + 1
        registered = self._pm.register(obj, unique, priority)
        return str(registered)

    def get_hooks_info(self) -> dict[str, list[str]]:
        """Per hook point, ``"Name (PRIORITY)"`` of each hook in call order."""
        return self._pm.hooks_info()

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        """Train (validating every ``val_interval`` epochs and after the last), then test."""
        self._run(train=True, test=self.test_dataloader is not None)

    def train(self) -> None:
        """Train (with validation) only."""
        self._run(train=True)

    def val(self) -> dict[str, float]:
        """One validation loop; returns its metrics."""
        return self._run(val=True)

    def test(self) -> dict[str, float]:
        """One test loop; returns its metrics."""
        return self._run(test=True)

    def _run(self, train: bool = False, val: bool = False, test: bool = False) -> dict[str, float]:
        hook, metrics = self.hook, {}
        with self._blame_hooks():
            hook.before_run(runner=self)
            self._load_or_resume()
            while train and self.epoch < self.max_epochs and self.iter < self.max_iters and not self.should_stop:
                self.wrapped_model.train()
                hook.before_train_epoch(runner=self)
                stopped = False
                for batch_idx, data_batch in self._train_batches():
                    if self.should_stop:  # checked between iterations: this epoch did not end
                        stopped = True
                        break
                    data_batch = to_device(data_batch, self.device)
                    hook.before_train_iter(runner=self, batch_idx=batch_idx, data_batch=data_batch)
                    with self._forward_context():
                        self.outputs = forward(self.wrapped_model, data_batch, self.loss_fn)
                    self._iter_done = True
                    hook.after_train_iter(runner=self, batch_idx=batch_idx, data_batch=data_batch,
                                          outputs=self.outputs)
                    self._iter_done = False
                    self.iter += 1
                    self._inner_done += 1
                    if self.iter >= self.max_iters:
                        break
                if stopped:
                    break
                self._epoch_done = True
                hook.after_train_epoch(runner=self)
                self._epoch_done = False
                self.epoch += 1
                self._inner_done = 0
                last = self.epoch >= self.max_epochs or self.iter >= self.max_iters
                if self.val_dataloader is not None and (self.epoch % self.val_interval == 0 or last):
                    metrics = self._evaluate("val")
            if val:
                metrics = self._evaluate("val")
            if test:
                metrics = self._evaluate("test")
            hook.after_run(runner=self)
        return metrics

    def _evaluate(self, kind: str) -> dict[str, float]:
        """One validation or test loop: the same code for both, firing that kind's points."""
        loader = self.val_dataloader if kind == "val" else self.test_dataloader
        if loader is None:
            raise ConfigError(f"no {kind} loader: pass {kind}_dataloader= to the Runner", f"{kind}_dataloader")
        before_iter = getattr(self.hook, f"before_{kind}_iter")
        after_iter = getattr(self.hook, f"after_{kind}_iter")
        self.wrapped_model.eval()
        getattr(self.hook, f"before_{kind}_epoch")(runner=self)
        self._meter.reset()
        with torch.no_grad():
            for batch_idx, data_batch in enumerate(loader):
                data_batch = to_device(data_batch, self.device)
                before_iter(runner=self, batch_idx=batch_idx, data_batch=data_batch)
                with self._forward_context():
                    outputs = forward(self.wrapped_model, data_batch, self.loss_fn)
                self._meter.update(outputs)
                after_iter(runner=self, batch_idx=batch_idx, data_batch=data_batch, outputs=outputs)
        means, count = self._meter.compute()
        metrics = dist.reduce_weighted_means(means, count, self.device)
        getattr(self.hook, f"after_{kind}_epoch")(runner=self, metrics=metrics)
        self.wrapped_model.train()
        return metrics

    def _train_batches(self) -> Iterator[tuple[int, Any]]:
        """The batches of this epoch, starting after those a resumed checkpoint already trained."""
        start, self._resume_inner = self._resume_inner, 0
        self._inner_done = start
        batches = enumerate(self.train_dataloader)
        for _ in range(start):  # replaced by sampler-level skipping in pluginloop._resume
            next(batches)
        return batches

    def _forward_context(self) -> contextlib.AbstractContextManager[Any]:
        if not self.forward_contexts:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for factory in self.forward_contexts:
            stack.enter_context(factory())
        return stack

    def _completed(self) -> tuple[int, int, int]:
        """(epochs, iterations, iterations of this epoch) completed, counting the step in progress."""
        if self._epoch_done:
            return self.epoch + 1, self.iter, 0
        if self._iter_done:
            return self.epoch, self.iter + 1, self._inner_done + 1
        return self.epoch, self.iter, self._inner_done

    def _shard(self, loader: Any, train: bool) -> Any:
        if loader is None or self.world_size == 1:
            return loader
        shuffle = dist.loader_shuffles(loader) if train else False
        return dist.shard_dataloader(loader, shuffle=shuffle, seed=self.seed)

    @contextlib.contextmanager
    def _blame_hooks(self) -> Iterator[None]:
        """Re-raise an exception from inside a hook as HookCallError naming the plugin and point."""
        try:
            yield
        except HookCallError:
            raise
        except Exception as exc:
            culprit = self._culprit(exc.__traceback__)
            if culprit is None:
                raise
            raise HookCallError(*culprit, self.epoch, self.iter, exc) from exc

    def _culprit(self, tb: TracebackType | None) -> tuple[str, str] | None:
        codes = {
            getattr(impl.function, "__code__", None): (impl.plugin_name, point)
            for point in HOOK_POINTS
            for impl in self.hook.__dict__[point].get_hookimpls()
        }
        found = None
        while tb is not None:  # the innermost hook frame is the one to blame
            found = codes.get(tb.tb_frame.f_code, found)
            tb = tb.tb_next
        return found

    # -- checkpoints --------------------------------------------------------------------

    def save_checkpoint(
        self, filename: str, out_dir: str | os.PathLike[str] | None = None, save_optimizer: bool = True
    ) -> Path:
        """Write the runner's complete state to ``out_dir/filename`` (rank 0 writes).

        Fires ``before_save_checkpoint`` with the dict first; updates ``last_checkpoint``.
        """
        state = _state.collect(self, save_optimizer)
        self.hook.before_save_checkpoint(runner=self, checkpoint=state)
        path = Path(out_dir or self.work_dir) / filename
        if self.rank == 0:
            epoch, iteration, _ = self._completed()
            checkpoint.save_checkpoint(state, path, meta={"epoch": epoch, "iter": iteration, "step": iteration})
            checkpoint.write_pointer(self.work_dir, path)
        dist.barrier()
        return path

    def load_checkpoint(self, path: str | os.PathLike[str], resume: bool = True) -> dict[str, Any]:
        """Load ``path``: everything when ``resume``, else model weights only; fires after_load_checkpoint."""
        ckpt = checkpoint.load_checkpoint(path, map_location=self.device)
        (_state.restore if resume else _state.restore_weights)(self, ckpt)
        self.logger.info("%s %s (epoch %d, iter %d)", "resumed from" if resume else "loaded weights from",
                         path, self.epoch, self.iter)
        self.hook.after_load_checkpoint(runner=self, checkpoint=ckpt)
        return ckpt

    def _load_or_resume(self) -> None:
        if self.resume:
            path = (checkpoint.find_resumable(self.work_dir) if self.resume is True else Path(self.resume))
            if path is not None:
                self.load_checkpoint(path, resume=True)
            else:
                self.logger.info("resume=True: no checkpoint in %s yet, starting fresh", self.work_dir)
        elif self.load_from is not None:
            self.load_checkpoint(self.load_from, resume=False)
        self.resume = self.load_from = None  # once per runner, not again in a later phase


def _make_logger(rank: int) -> logging.Logger:
    logger = logging.getLogger("pluginloop")
    if not any(getattr(h, "_pluginloop", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        handler._pluginloop = True  # type: ignore[attr-defined]  # marks ours, so it is added once
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    return logger


def _seed_everything(seed: int | None) -> int:
    """Seed Python, NumPy and torch; without a seed draw one (the same on every rank)."""
    if seed is None:
        seed = int(dist.broadcast_object(random.SystemRandom().randrange(2**31)))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


def train(**kwargs: Any) -> Runner:
    """Build a ``Runner(**kwargs)``, run it (train, validate, test) and return it."""
    runner = Runner(**kwargs)
    runner.run()
    return runner
