"""The Runner: state, construction from configs, and the loop that fires the 16 hook points."""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import random
import signal
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from pluginloop import _checkpointing, _preempt, _resume, _state, _summary, dist
from pluginloop._build import build_optimizer, build_schedulers, check_dist_options, hook_configs
from pluginloop._data import MetricMeter, forward, to_device
from pluginloop._manager import HookRelay, PluginManager
from pluginloop.errors import (
    ConfigError,
    DistributedError,
    HookCallError,
    PluginValidationError,
)
from pluginloop.hooks import DEFAULT_HOOKS, Hook
from pluginloop.hookspecs import HOOK_POINTS
from pluginloop.hub import MessageHub
from pluginloop.plugins import load_plugins
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
        ddp_kwargs: Mapping[str, Any] | None = None,
        dist_timeout: float | datetime.timedelta | None = None,
        autoload_plugins: bool = True,
        disable_plugins: Sequence[str] = (),
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"expected a torch.nn.Module, got {type(model).__name__}", "model")
        if scheduler is not None and param_scheduler is not None:
            raise ConfigError("give scheduler= or its alias param_scheduler=, not both", "param_scheduler")
        lengths = (("max_epochs", max_epochs), ("max_iters", max_iters), ("val_interval", val_interval))
        for key, value in lengths:
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"must be a positive int, got {value!r}", key)
        if train_dataloader is not None and max_epochs is None and max_iters is None:
            raise ConfigError("training needs a length: pass max_epochs= or max_iters=", "max_epochs")
        self._dist_timeout = check_dist_options(ddp_kwargs, dist_timeout)
        self._dist = dist.setup(launcher, backend, device, self._dist_timeout)
        self.rank, self.world_size, self.device = self._dist.rank, self._dist.world_size, self._dist.device
        # Batches go to a GPU without a stream sync: pinned ones (pin_memory=True) asynchronously.
        self._non_blocking = self.device.type == "cuda"
        self.logger = _summary.make_logger(self.rank)
        self.work_dir = Path(work_dir)
        self.seed = _seed_everything(seed)
        self.model = model.to(self.device)
        self.optimizer = build_optimizer(optimizer, self.model)
        self.param_schedulers = build_schedulers(scheduler if scheduler is not None else param_scheduler,
                                                 self.optimizer)
        self.wrapped_model = dist.wrap_model(self.model, self._dist, **dict(ddp_kwargs or {}))
        self.loss_fn = loss_fn
        self._meter = MetricMeter(metrics or {})
        # Rebuilt around a sampler whose order is a function of (seed, epoch): see pluginloop._resume.
        self.train_dataloader = _resume.make_resumable(self._shard(train_dataloader, train=True), self.seed)
        self.val_dataloader = self._shard(val_dataloader, train=False)
        self.test_dataloader = self._shard(test_dataloader, train=False)
        #: The run's planned length: ``max_iters`` is the total either way (derived from
        #: ``max_epochs`` and the loader's length when not given; inf for a loader without one).
        self.max_epochs, self.max_iters = _run_length(self.train_dataloader, max_epochs, max_iters)
        self.val_interval = val_interval
        self.load_from = load_from
        self.resume: bool | str | os.PathLike[str] | None = resume
        self.epoch = self.iter = 0
        self.should_stop = False
        self.outputs: dict[str, Any] = {}
        self.message_hub = MessageHub()
        #: Context-manager factories entered around every forward pass (e.g. autocast).
        self.forward_contexts: list[Callable[[], contextlib.AbstractContextManager[Any]]] = []
        #: The loss scaler an AMP hook (Fp16OptimizerHook) installs; OptimizerHook steps through it.
        self.grad_scaler: torch.amp.GradScaler | None = None
        self._resume_inner = self._inner_done = 0
        self._iter_done = self._epoch_done = False
        self._preempt = _preempt.Preemption()
        self._closed = False  # close() ran: a distributed runner cannot run again
        # Random state a resume applies once the data iterator is positioned (_state.restore_rng),
        # and training's own while validation runs on a copy (_state.training_rng_kept).
        self._pending_rng: dict[str, Any] | None = None
        self._train_rng: dict[str, Any] | None = None
        self._pm = PluginManager()
        self.hook = cast(HookRelay, self._pm.hook)
        #: Where each hook came from, by registered name: shown by hook_plan() / `pluginloop hooks`.
        self._sources: dict[str, str] = {}
        self._configured = set(default_hooks) if isinstance(default_hooks, Mapping) else set()
        configs = hook_configs(DEFAULT_HOOKS, default_hooks, custom_hooks)
        # Custom hooks are built first: one that configures an installed plugin replaces it.
        customs = [(key, HOOKS.build(cfg, key=key)) for key, cfg in configs if key.startswith("custom_hooks")]
        for key, cfg in configs:
            if not key.startswith("custom_hooks"):
                self.register_hook(cfg, key=key)
        #: Installed entry-point plugins and their status (pluginloop.plugins), registered
        #: after the default hooks and before the custom hooks, sorted by name (SPEC section 3).
        self.plugins = load_plugins(self._pm, autoload_plugins, disable_plugins, [h for _, h in customs])
        for key, hook in customs:
            self.register_hook(hook, key=key)

    # -- plugins ------------------------------------------------------------------------

    def register_hook(
        self, hook: Any, priority: PriorityLike | None = None, name: str | None = None, key: str = "hook"
    ) -> str:
        """Register a Hook, a pluggy-style plugin (object or module) or a hook config dict.

        ``priority`` overrides the hook's own; returns the name it was registered under
        (its class name, made unique). Its state is saved in checkpoints under that name.
        """
        if isinstance(hook, type) and issubclass(hook, Hook):  # a Hook class: its default instance
            hook = hook()
        obj = HOOKS.build(hook, key=key) if isinstance(hook, Mapping) else hook
        base = name or getattr(obj, "__name__", None) or type(obj).__name__
        unique, n = base, 1
        while self._pm.has_plugin(unique) and name is None:
            unique, n = f"{base}-{n}", n + 1
        try:
            registered = str(self._pm.register(obj, unique, priority))
        except PluginValidationError as exc:
            if key == "hook":
                raise
            raise PluginValidationError(obj, f"{key}: {exc}") from None  # name the config entry

        if key == "hook":
            self._sources[registered] = "code (register_hook)"
        elif key.startswith("default_hooks.") and key.partition(".")[2] not in self._configured:
            self._sources[registered] = f"built-in default ({key})"
        else:
            self._sources[registered] = f"config {key}"
        return registered

    def get_hooks_info(self) -> dict[str, list[str]]:
        """Per hook point, ``"Name (PRIORITY)"`` of each hook in call order."""
        return self._pm.hooks_info()

    def hook_plan(self) -> dict[str, list[dict[str, Any]]]:
        """Per hook point, each hook in call order: name, object, priority (value and name), source.

        The source is ``built-in default (default_hooks.<key>)``, ``config <key path>``, ``plugin
        <distribution> <version> (entry point <name>)`` or ``code (register_hook)``.
        """
        plugins = {info.name: info for info in self.plugins}
        objects = dict(self._pm.list_name_plugin())

        def source(name: str) -> str:
            info = plugins.get(name)
            if name not in self._sources and info is not None:
                return f"plugin {info.distribution} {info.version} (entry point {name!r})"
            return self._sources.get(name, "registered on the plugin manager directly")

        return {
            point: [_summary.plan_entry(name, objects[name], value, source(name))
                    for name, value in self._pm.ordered_impls(point)]
            for point in HOOK_POINTS
        }

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        """Train (validating every ``val_interval`` epochs and after the last), then test.

        The whole job: when it succeeds, it ends the distributed run (``close()``). For
        several phases in one process use ``train()``, ``val()``, ``test()``, then ``close()``.
        """
        self._run(train=True, test=self.test_dataloader is not None)
        self.close()

    def train(self) -> None:
        """Train (with validation) only."""
        self._run(train=True)

    def val(self) -> dict[str, float]:
        """One validation loop; returns its metrics."""
        return self._run(val=True)

    def test(self) -> dict[str, float]:
        """One test loop; returns its metrics."""
        return self._run(test=True)

    @property
    def is_main_process(self) -> bool:
        """True on rank 0, the process that writes logs, checkpoints and plugin outputs."""
        return self.rank == 0

    def close(self) -> None:
        """End this runner's distributed run: release its DDP wrapper, destroy the group if it made it.

        ``run()`` and a preemption exit call it, and ``with Runner(...) as runner:`` at the end of
        the block. After ``train()`` / ``val()`` / ``test()`` call it yourself before the script
        ends: with torch 2.13, gloo workers that exit with the group alive sometimes abort
        ("terminate called without an active exception"); destroying it first does not.
        A group cannot be reliably re-created in a torchrun worker, so a closed distributed
        runner cannot run again, and other Runners of the process must run before the one
        that made the group closes (they join its group; closing them leaves it up).
        Idempotent; a no-op in a single process.
        """
        if self.world_size > 1 and not self._closed:
            self._closed = True
            # Let go of DDP: it holds the process group, which is (or will be) destroyed.
            self.wrapped_model = self.model
        dist.teardown(self._dist)

    def __enter__(self) -> Runner:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """``close()`` after a block that ended normally; after an error, leave it to the exit."""
        if exc_type is None:  # a peer may be dead: destroying then can hang or abort
            self.close()

    def _run(self, train: bool = False, val: bool = False, test: bool = False) -> dict[str, float]:
        hook, metrics = self.hook, {}
        if self.world_size > 1 and (self._closed or not dist.is_distributed()):
            raise DistributedError("this distributed runner is closed (run() and close() end it) and cannot "
                                   "run again; for several phases call train(), val(), test(), then close()")
        # While training, SIGTERM/SIGINT only set a flag, read at the next iteration boundary.
        with self._blame_hooks(), (self._preempt if train else contextlib.nullcontext()):
            hook.before_run(runner=self)
            if train:  # the run's shape and hook plan, once; after before_run, so the log file has it
                _summary.log_start(self)
            self._load_or_resume()
            # max_iters is the run's length (inf only for a loader without one; then max_epochs ends it)
            while train and not self.should_stop and self.epoch < self.max_epochs and (
                self.iter < self.max_iters
            ):
                self.wrapped_model.train()
                hook.before_train_epoch(runner=self)
                stopped = False
                # Per-iteration points are fired: arguments positional, in the spec's order
                # (runner, batch_idx, data_batch[, outputs]), results dropped; the cheapest call.
                before_iter, after_iter = hook.before_train_iter.fire, hook.after_train_iter.fire
                for batch_idx, data_batch in self._train_batches():
                    if self.should_stop:  # checked between iterations: this epoch did not end
                        stopped = True
                        break
                    data_batch = to_device(data_batch, self.device, self._non_blocking)
                    before_iter(self, batch_idx, data_batch)
                    self.outputs = self._forward(self.wrapped_model, data_batch)
                    self._iter_done = True
                    after_iter(self, batch_idx, data_batch, self.outputs)
                    self._iter_done = False
                    self.iter += 1
                    self._inner_done += 1
                    if self.iter >= self.max_iters:
                        break
                    if self._preempted():  # a signal reached this rank or another: save, exit
                        self._stop_for_signal()
                if stopped:
                    break
                self._epoch_done = True
                hook.after_train_epoch(runner=self)
                self._epoch_done = False
                self.epoch += 1
                self._inner_done = 0
                if self._val_due(self.epoch):
                    with _state.training_rng_kept(self):  # validation must not move training's random stream
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
            raise ConfigError(f"no {kind} loader: pass {kind}_dataloader= to the Runner",
                              f"{kind}_dataloader")
        before_iter = getattr(self.hook, f"before_{kind}_iter").fire
        after_iter = getattr(self.hook, f"after_{kind}_iter").fire
        self.wrapped_model.eval()
        getattr(self.hook, f"before_{kind}_epoch")(runner=self)
        self._meter.reset()
        with torch.no_grad():
            for batch_idx, data_batch in enumerate(loader):
                data_batch = to_device(data_batch, self.device, self._non_blocking)
                before_iter(self, batch_idx, data_batch)
                # The bare model, not DDP: its forward may broadcast buffers (a collective),
                # and evaluation shards are exact, so ranks may run one batch fewer.
                outputs = self._forward(self.model, data_batch)
                self._meter.update(outputs)
                after_iter(self, batch_idx, data_batch, outputs)
        means, count = self._meter.compute()
        metrics = dist.reduce_weighted_means(means, count, self.device)
        getattr(self.hook, f"after_{kind}_epoch")(runner=self, metrics=metrics)
        self.wrapped_model.train()
        return metrics

    def _train_batches(self) -> Iterator[tuple[int, Any]]:
        """The batches of this epoch, starting after those a resumed checkpoint already trained.

        The trained batches are skipped in the sampler, not loaded (pluginloop._resume); the
        resumed random state is applied only then, where the interrupted run stood when it saved.
        """
        start, self._resume_inner = self._resume_inner, 0
        self._inner_done = start
        batches = _resume.epoch_batches(self.train_dataloader, self.epoch, start, self.logger)
        _state.restore_rng(self)
        return batches

    def _forward(self, model: nn.Module, batch: Any) -> dict[str, Any]:
        """``forward(model, batch)`` inside every context of ``forward_contexts`` (autocast, no_sync)."""
        if not self.forward_contexts:
            return forward(model, batch, self.loss_fn)
        with contextlib.ExitStack() as stack:
            for factory in self.forward_contexts:
                stack.enter_context(factory())
            return forward(model, batch, self.loss_fn)

    def _completed(self) -> tuple[int, int, int]:
        """(epochs, iterations, iterations of this epoch) completed, counting the step in progress."""
        if self._epoch_done:
            return self.epoch + 1, self.iter, 0
        if self._iter_done:
            return self.epoch, self.iter + 1, self._inner_done + 1
        return self.epoch, self.iter, self._inner_done

    def _val_due(self, epochs: int) -> bool:
        """Whether validation follows the train epoch after which ``epochs`` epochs are complete."""
        last = epochs >= self.max_epochs or self.iter >= self.max_iters
        return self.val_dataloader is not None and (epochs % self.val_interval == 0 or last)

    def _shard(self, loader: Any, train: bool) -> Any:
        if loader is None or self.world_size == 1:
            return loader
        if not train:  # each sample on exactly one rank, so reduced metrics are exact
            return dist.shard_dataloader(loader, shuffle=False, seed=self.seed, exact=True)
        return dist.shard_dataloader(loader, shuffle=dist.loader_shuffles(loader), seed=self.seed)

    def _preempted(self) -> int:
        """The signal that asks this run to stop (0: none), agreed by all ranks.

        Distributed, ``should_stop`` is agreed in the same reduction: a hook that sets it on
        one rank (a local NaN check) stops every rank at this boundary instead of leaving
        the others waiting in the next collective.
        """
        if self.world_size == 1:  # a single process pays nothing per iteration
            return self._preempt.signum
        # One tiny CPU all-reduce per iteration. The max of 2 * signum + stop is the largest
        # signal, and when no rank has one, whether any rank wants to stop.
        agreed = dist.max_over_ranks(2 * self._preempt.signum + int(self.should_stop))
        self.should_stop = self.should_stop or bool(agreed & 1)
        return agreed >> 1

    def _stop_for_signal(self) -> None:
        """Save a checkpoint on every rank's behalf and exit with 128 + the signal number."""
        signum = self._preempted()  # agreed already; read again so that every rank names the same
        name = signal.Signals(signum).name
        path = _preempt.save_checkpoint(self)
        self.logger.warning(
            "%s received: stopped after iteration %d (epoch %d, %d iterations into it); saved %s. "
            "Resume with Runner(..., resume=True) in work_dir %s (`pluginloop train CONFIG --resume`), "
            "or resume='%s'",
            name, self.iter, self.epoch + 1, self._inner_done, path, self.work_dir, path,
        )
        self.close()  # every rank is here, in step: the one safe moment to destroy the group
        raise SystemExit(_preempt.exit_code(signum))

    @contextlib.contextmanager
    def _blame_hooks(self) -> Iterator[None]:
        """Re-raise an exception from inside a hook as HookCallError naming the plugin and point."""
        try:
            yield
        except HookCallError:
            raise
        except Exception as exc:
            culprit = self._culprit(exc.__traceback__)
            if self.world_size > 1 and dist.is_peer_failure(exc):  # another rank is the cause
                where = f"in {culprit[0]!r} at {culprit[1]!r}" if culprit else "in the loop"
                where += f" (epoch {self.epoch}, iteration {self.iter})"
                raise dist.peer_failure_error(exc, where, self._dist_timeout) from exc
            if culprit is None:
                raise
            raise HookCallError(*culprit, self.epoch, self.iter, exc) from exc

    def _culprit(self, tb: TracebackType | None) -> tuple[str, str] | None:
        # Instances of one Hook class share their methods' code: tell them apart by `self`.
        codes: dict[tuple[Any, Any], tuple[str, str]] = {}
        for point in HOOK_POINTS:
            for impl in self.hook.__dict__[point].get_hookimpls():
                code = getattr(impl.function, "__code__", None)
                codes[code, id(getattr(impl.function, "__self__", None))] = (impl.plugin_name, point)
                codes.setdefault((code, None), (impl.plugin_name, point))
        found = None
        while tb is not None:  # the innermost hook frame is the one to blame
            code, owner = tb.tb_frame.f_code, tb.tb_frame.f_locals.get("self")
            found = codes.get((code, id(owner)), codes.get((code, None), found))
            tb = tb.tb_next
        return found

    # -- checkpoints (pluginloop._checkpointing) ---------------------------------------

    def save_checkpoint(
        self, filename: str, out_dir: str | os.PathLike[str] | None = None, save_optimizer: bool = True
    ) -> Path:
        """Write the runner's complete state to ``out_dir/filename`` (rank 0 writes).

        Fires ``before_save_checkpoint`` with the dict first; updates ``last_checkpoint``.
        Every rank calls it (collecting state and the write's outcome are collectives).
        """
        return _checkpointing.save(self, filename, out_dir, save_optimizer)

    def load_checkpoint(self, path: str | os.PathLike[str], resume: bool = True) -> dict[str, Any]:
        """Load ``path``: everything when ``resume``, else model weights only; fires after_load_checkpoint.

        The file is verified against its record before anything is applied, and loaded with
        ``weights_only=True`` (it cannot run code). Weights only (``resume=False``, i.e.
        ``load_from``) also takes a foreign ``torch.save`` file, which has no record to verify.
        """
        return _checkpointing.load(self, path, resume)

    def _load_or_resume(self) -> None:
        _checkpointing.load_or_resume(self)


def _run_length(loader: Any, max_epochs: int | None, max_iters: int | None) -> tuple[int, float]:
    """``(max_epochs, max_iters)``: the one not given follows from the other and ``len(loader)``."""
    try:
        per_epoch: int | None = len(loader) if loader is not None else None
    except TypeError:  # an iterable dataset: only max_iters can end the run early
        per_epoch = None
    if per_epoch == 0:
        raise ConfigError("the train loader yields no batch (an empty dataset, or drop_last with fewer "
                          "samples than batch_size): give it data or leave train_dataloader out",
                          "train_dataloader")
    limit = math.inf if max_iters is None else max_iters
    if per_epoch is None:
        return max_epochs or 0, limit
    if max_epochs is None:
        max_epochs = math.ceil(max_iters / per_epoch) if max_iters is not None else 0
    return max_epochs, min(limit, max_epochs * per_epoch)


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
