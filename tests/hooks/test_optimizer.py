"""OptimizerHook: the plain step, gradient clipping, anomalous-parameter detection."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pluginloop import ConfigError, Hook, Runner
from pluginloop.hooks import DEFAULT_HOOKS, OptimizerHook


def _loader(n: int = 8, batch_size: int = 2, scale: float = 1.0) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 4, generator=g), scale * torch.randn(n, 1, generator=g))
    return DataLoader(data, batch_size=batch_size)


def _runner(tmp_path: Any, model: nn.Module, optimizer_hook: Any = None, **kwargs: Any) -> Runner:
    hooks: dict[str, Any] = {key: None for key in DEFAULT_HOOKS}
    hooks["optimizer"] = optimizer_hook or dict(type="OptimizerHook")
    args: dict[str, Any] = dict(
        model=model, work_dir=tmp_path, train_dataloader=_loader(), loss_fn=nn.functional.mse_loss,
        optimizer=dict(type="SGD", lr=0.1), max_epochs=1, device="cpu", seed=0, default_hooks=hooks,
    )
    return Runner(**{**args, **kwargs})


def test_plain_step_equals_the_hand_written_loop(tmp_path: Any) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    reference = nn.Linear(4, 1)
    reference.load_state_dict(model.state_dict())
    _runner(tmp_path, model, max_epochs=2).train()

    opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    for _ in range(2):
        for x, y in _loader():
            opt.zero_grad()
            nn.functional.mse_loss(reference(x), y).backward()  # type: ignore[no-untyped-call]
            opt.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    assert all(p.grad is None for p in model.parameters())  # zero_grad(set_to_none) after the step


def test_grad_clip_bounds_the_total_norm_and_publishes_the_norm_before_clipping(tmp_path: Any) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    runner = _runner(tmp_path, model, dict(type="OptimizerHook", grad_clip=dict(max_norm=0.5)),
                     train_dataloader=_loader(scale=100.0))
    clipped: list[float] = []

    def record(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        clipped.append(float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))))

    assert runner.optimizer is not None
    runner.optimizer.register_step_pre_hook(record)
    published: list[Any] = []

    class ReadNorm(Hook):
        priority = "LOW"

        def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None,
                             outputs: Any = None) -> None:
            published.append(runner.message_hub.latest["grad_norm"])

    runner.register_hook(ReadNorm())
    runner.train()
    assert len(clipped) == 4
    assert all(n <= 0.5 + 1e-6 for n in clipped)
    assert all(n > 0.5 for n in published)  # the norm before clipping, so clipping did something
    assert all(isinstance(n, (float, torch.Tensor)) for n in published)


def test_grad_clip_with_a_typo_suggests_the_argument() -> None:
    with pytest.raises(ConfigError, match="did you mean 'max_norm'"):
        OptimizerHook(grad_clip=dict(max_nrom=1.0))


def test_grad_clip_config_mistakes_fail_in_the_runner_constructor(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match=r"default_hooks\.optimizer.*did you mean 'norm_type'"):
        _runner(tmp_path, nn.Linear(4, 1), dict(type="OptimizerHook", grad_clip=dict(max_norm=1, norm_typ=2)))
    with pytest.raises(ConfigError, match="needs max_norm"):
        OptimizerHook(grad_clip=dict(norm_type=2.0))
    with pytest.raises(ConfigError, match="grad_clip"):
        OptimizerHook(grad_clip=1.0)  # type: ignore[arg-type]


class _PartlyUsed(nn.Module):
    """``unused`` never runs; ``aux`` runs in forward but does not reach the returned output."""

    def __init__(self) -> None:
        super().__init__()
        self.main = nn.Linear(4, 1)
        self.aux = nn.Linear(4, 2)
        self.unused = nn.Linear(3, 3)
        self.frozen = nn.Linear(4, 1).requires_grad_(False)
        self.aux_out: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.aux_out = self.aux(x)
        out: torch.Tensor = self.main(x) + 0 * self.frozen(x)
        return out


def test_detect_anomalous_params_reports_unused_and_forward_only_parameters(
    tmp_path: Any, log: pytest.LogCaptureFixture
) -> None:
    runner = _runner(tmp_path, _PartlyUsed(), dict(type="OptimizerHook", detect_anomalous_params=True))
    runner.train()
    reports = [r.getMessage() for r in log.records if "autograd graph" in r.getMessage()]
    assert len(reports) == 1  # once for the same set, not on every iteration
    message = reports[0]
    for name in ("unused.weight (3, 3)", "unused.bias (3,)", "aux.weight (2, 4)", "aux.bias (2,)"):
        assert name in message
    assert "main." not in message and "frozen." not in message  # in the graph / not trainable


def test_detect_anomalous_params_is_quiet_when_every_parameter_is_used(
    tmp_path: Any, log: pytest.LogCaptureFixture
) -> None:
    _runner(tmp_path, nn.Linear(4, 1), dict(type="OptimizerHook", detect_anomalous_params=True)).train()
    assert not [r for r in log.records if "autograd graph" in r.getMessage()]


def test_detect_anomalous_params_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="detect_anomalous_params"):
        OptimizerHook(detect_anomalous_params="yes")  # type: ignore[arg-type]


def test_no_optimizer_is_a_clear_error(tmp_path: Any) -> None:
    runner = _runner(tmp_path, nn.Linear(4, 1), optimizer=None)
    with pytest.raises(Exception, match="pass optimizer= to the Runner"):
        runner.train()
