"""CheckpointHook: the SPEC's worked examples, rotation after a safe write, best checkpoints, state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pluginloop import ConfigError, Hook, HookCallError, Runner
from pluginloop import checkpoint as ckpt
from pluginloop.hooks import DEFAULT_HOOKS, CheckpointHook
from pluginloop.hooks.checkpoint import infer_rule


def _loader(batches: int, batch_size: int = 2) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    n = batches * batch_size
    return DataLoader(
        TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)), batch_size=batch_size
    )


def _runner(
    work_dir: Path, epochs: int = 2, batches: int = 1, val: bool = False, custom_hooks: Any = (), **hook: Any
) -> Runner:
    hooks: dict[str, Any] = {key: None for key in DEFAULT_HOOKS}
    hooks.update(optimizer=dict(type="OptimizerHook"), checkpoint=dict(type="CheckpointHook", **hook))
    torch.manual_seed(0)
    return Runner(
        model=nn.Linear(4, 1),
        work_dir=work_dir,
        train_dataloader=_loader(batches),
        val_dataloader=_loader(1) if val else None,
        loss_fn=nn.functional.mse_loss,
        optimizer=dict(type="SGD", lr=0.01),
        max_epochs=epochs,
        device="cpu",
        seed=0,
        default_hooks=hooks,
        custom_hooks=list(custom_hooks),
    )


def _names(directory: Path, glob: str = "*.pth") -> list[str]:
    return sorted((p.name for p in directory.glob(glob)), key=lambda n: (len(n), n))


class _Files(Hook):
    """After each train epoch / validation (after CheckpointHook), records the checkpoints present."""

    priority = "LOWEST"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.seen: list[list[str]] = []

    def after_train_epoch(self, runner: Runner) -> None:
        self.seen.append(_names(self.directory))

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        self.seen.append(_names(self.directory))


class _Scores(Hook):
    """Replaces validation's metric ``name`` with a scripted value per epoch (runs first)."""

    priority = "HIGHEST"

    def __init__(self, name: str, scores: list[float]) -> None:
        self.name, self.scores = name, scores

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float]) -> None:
        metrics[self.name] = self.scores[runner.epoch - 1]


# -- the SPEC's worked examples -----------------------------------------------------------------


@pytest.mark.parametrize(("save_last", "expected"), [(False, [5, 10, 15, 20]), (True, [5, 10, 15, 20, 21])])
def test_21_epochs_interval_5_saves_epochs_5_10_15_20_and_21_with_save_last(
    tmp_path: Path, save_last: bool, expected: list[int]
) -> None:
    _runner(tmp_path, epochs=21, interval=5, save_last=save_last).run()
    assert _names(tmp_path) == [f"epoch_{n}.pth" for n in expected]
    assert ckpt.read_pointer(tmp_path) == (tmp_path / f"epoch_{expected[-1]}.pth").absolute()


@pytest.mark.parametrize(("save_last", "expected"), [(False, [5, 10]), (True, [5, 10, 12])])
def test_by_iteration_interval_5_saves_every_5_iterations(
    tmp_path: Path, save_last: bool, expected: list[int]
) -> None:
    _runner(tmp_path, epochs=3, batches=4, interval=5, by_epoch=False, save_last=save_last).run()
    assert _names(tmp_path) == [f"iter_{n}.pth" for n in expected]
    for name in _names(tmp_path):
        assert ckpt.verify_checkpoint(tmp_path / name)["iter"] == int(name[5:-4])


def test_20_epochs_interval_5_keep_2_deletes_5_when_15_is_saved_and_10_when_20(tmp_path: Path) -> None:
    files = _Files(tmp_path)
    _runner(tmp_path, epochs=20, interval=5, max_keep_ckpts=2, custom_hooks=[files]).run()
    assert files.seen[4] == ["epoch_5.pth"]
    assert files.seen[9] == ["epoch_5.pth", "epoch_10.pth"]
    assert files.seen[14] == ["epoch_10.pth", "epoch_15.pth"]
    assert files.seen[19] == ["epoch_15.pth", "epoch_20.pth"]
    assert _names(tmp_path, "*.meta.json") == ["epoch_15.pth.meta.json", "epoch_20.pth.meta.json"]


def test_old_checkpoints_are_deleted_only_after_the_new_one_and_the_pointer_are_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deletions: list[tuple[str, str]] = []
    remove = ckpt.remove_checkpoint

    def checked_remove(path: Any) -> None:
        newest = ckpt.read_pointer(tmp_path)
        assert newest is not None
        ckpt.verify_checkpoint(newest)  # complete and recorded before anything is deleted
        deletions.append((Path(path).name, newest.name))
        remove(path)

    monkeypatch.setattr(ckpt, "remove_checkpoint", checked_remove)
    _runner(tmp_path, epochs=4, max_keep_ckpts=1).run()
    assert deletions == [
        ("epoch_1.pth", "epoch_2.pth"),
        ("epoch_2.pth", "epoch_3.pth"),
        ("epoch_3.pth", "epoch_4.pth"),
    ]


def test_by_epoch_registers_no_per_iteration_call(tmp_path: Path) -> None:
    by_epoch = _runner(tmp_path).get_hooks_info()
    assert not any("CheckpointHook" in entry for entry in by_epoch["after_train_iter"])
    assert any("CheckpointHook (VERY_LOW)" in entry for entry in by_epoch["after_train_epoch"])
    assert not any("CheckpointHook" in entry for entry in by_epoch["after_val_epoch"])
    by_iter = _runner(tmp_path, by_epoch=False, save_best="acc").get_hooks_info()
    assert any("CheckpointHook" in entry for entry in by_iter["after_train_iter"])
    assert not any("CheckpointHook" in entry for entry in by_iter["after_train_epoch"])
    assert any("CheckpointHook" in entry for entry in by_iter["after_val_epoch"])


def test_is_a_default_hook_saving_every_epoch() -> None:
    assert list(DEFAULT_HOOKS)[-1] == "checkpoint"
    assert DEFAULT_HOOKS["checkpoint"] == dict(type="CheckpointHook", interval=1)


def test_only_rank_0_writes_or_deletes(tmp_path: Path) -> None:
    # A checkpoint another rank must not delete, under a name this hook will retire.
    foreign = ckpt.save_checkpoint({"x": torch.ones(1)}, tmp_path / "epoch_1.pth")
    runner = _runner(tmp_path, epochs=3, max_keep_ckpts=1)
    runner.rank = 1
    runner.run()
    assert _names(tmp_path) == ["epoch_1.pth"]
    ckpt.verify_checkpoint(foreign)
    assert ckpt.read_pointer(tmp_path) is None


def test_out_dir_holds_the_checkpoints_and_resume_finds_them_there(tmp_path: Path) -> None:
    out = tmp_path / "ckpts"
    _runner(tmp_path / "work", epochs=3, out_dir=str(out)).run()
    assert _names(out) == ["epoch_1.pth", "epoch_2.pth", "epoch_3.pth"]
    assert _names(tmp_path / "work") == []
    assert ckpt.read_pointer(tmp_path / "work") == (out / "epoch_3.pth").absolute()
    # The newest is damaged: the fallback search must look in out_dir, not the work dir.
    (out / "epoch_3.pth").write_bytes(b"")
    resumed = _runner(tmp_path / "work", epochs=3, out_dir=str(out))
    resumed.resume = True
    with pytest.warns(ckpt.CheckpointWarning, match="epoch_3.pth"):
        resumed.train()
    assert resumed.epoch == 3
    ckpt.verify_checkpoint(out / "epoch_3.pth")  # written again


@pytest.mark.parametrize(
    ("cfg", "key", "message"),
    [
        (dict(interval=0), "interval", "positive int"),
        (dict(interval=2.5), "interval", "int"),
        (dict(by_epoch="yes"), "by_epoch", "bool"),
        (dict(max_keep_ckpts=0), "max_keep_ckpts", "positive int or -1"),
        (dict(save_best=3), "save_best", "metric name"),
        (dict(save_best=["auto", "acc"]), "save_best", "'auto' stands alone"),
        (dict(save_best="acc", rule="bigger"), "rule", "'greater', 'less'"),
        (dict(save_best=["acc", "loss"], rule=["greater"]), "rule", "one per save_best"),
        (dict(rule="less"), "rule", "save_best"),
        (dict(save_best="throughput"), "rule", "cannot tell whether a larger 'throughput' is better"),
        (dict(out_dir=5), "out_dir", "directory"),
        (dict(internal=5), "default_hooks.checkpoint", "did you mean 'interval'"),
    ],
)
def test_configuration_mistakes_fail_at_construction(
    tmp_path: Path, cfg: dict[str, Any], key: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        _runner(tmp_path, **cfg)
    assert info.value.key is not None and info.value.key.startswith("default_hooks.checkpoint")
    assert f"{key}: " in str(info.value) or key == info.value.key  # names the argument
    assert not tmp_path.exists() or _names(tmp_path) == []


@pytest.mark.parametrize(
    ("metric", "rule"),
    [
        ("acc", "greater"),
        ("top1_acc", "greater"),
        ("val/accuracy", "greater"),
        ("mIoU", "greater"),
        ("mAP", "greater"),
        ("f1", "greater"),
        ("auc", "greater"),
        ("psnr", "greater"),
        ("recall", "greater"),
        ("loss", "less"),
        ("val/loss", "less"),
        ("mse", "less"),
        ("mae", "less"),
        ("error_rate", "less"),
        ("err", "less"),
        ("acc_loss", None),
        ("throughput", None),
    ],
)
def test_rule_is_inferred_from_the_metric_name(metric: str, rule: str | None) -> None:
    assert infer_rule(metric) == rule


# -- best checkpoints -----------------------------------------------------------------------------


def test_save_best_keeps_one_complete_checkpoint_of_the_best_score(tmp_path: Path) -> None:
    files = _Files(tmp_path)
    scores = [0.5, 0.7, 0.6, 0.8]
    _runner(
        tmp_path,
        epochs=4,
        val=True,
        interval=10,
        save_best="acc",
        custom_hooks=[_Scores("acc", scores), files],
    ).run()
    best_files = [[n for n in seen if n.startswith("best_")] for seen in files.seen[1::2]]
    assert best_files == [
        ["best_acc_epoch_1.pth"],
        ["best_acc_epoch_2.pth"],
        ["best_acc_epoch_2.pth"],
        ["best_acc_epoch_4.pth"],
    ]
    best = tmp_path / "best_acc_epoch_4.pth"
    state = ckpt.load_checkpoint(best)  # verified, complete: optimizer, counters, hook state
    assert {"optimizer", "state_dict", "rng", "sampler"} <= state.keys()
    assert state["meta"]["epoch"] == 4
    assert state["hooks"]["CheckpointHook"]["best"] == {"acc": {"score": 0.8, "path": str(best.absolute())}}
    assert ckpt.read_pointer(tmp_path) == best.absolute()
    resumed = _runner(
        tmp_path,
        epochs=5,
        val=True,
        interval=10,
        save_best="acc",
        custom_hooks=[_Scores("acc", [*scores, 0.1])],
    )
    resumed.resume = str(best)
    resumed.train()
    assert resumed.epoch == 5


def test_save_best_loss_keeps_the_lowest(tmp_path: Path) -> None:
    _runner(
        tmp_path,
        epochs=3,
        val=True,
        interval=10,
        save_best="loss",
        custom_hooks=[_Scores("loss", [3.0, 1.0, 2.0])],
    ).run()
    assert _names(tmp_path) == ["best_loss_epoch_2.pth"]


def test_save_best_auto_picks_the_first_metric_other_than_loss(tmp_path: Path) -> None:
    runner = _runner(
        tmp_path, epochs=2, val=True, interval=10, save_best="auto", custom_hooks=[_Scores("acc", [0.9, 0.4])]
    )
    runner.run()
    assert _names(tmp_path) == ["best_acc_epoch_1.pth"]
    hook = dict(runner._pm.list_name_plugin())["CheckpointHook"]
    assert hook.state_dict()["rules"] == {"acc": "greater"}


def test_save_best_list_keeps_a_best_per_metric(tmp_path: Path) -> None:
    _runner(
        tmp_path,
        epochs=3,
        val=True,
        interval=10,
        save_best=["acc", "loss"],
        custom_hooks=[_Scores("acc", [0.1, 0.5, 0.2]), _Scores("loss", [2.0, 3.0, 1.0])],
    ).run()
    assert _names(tmp_path) == ["best_acc_epoch_2.pth", "best_loss_epoch_3.pth"]


def test_unknown_save_best_metric_names_the_reported_ones(tmp_path: Path) -> None:
    with pytest.raises(HookCallError, match="validation reported only loss"):
        _runner(tmp_path, val=True, save_best="acc").run()


def test_the_previous_best_is_deleted_only_after_the_new_best_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    removed: list[str] = []
    remove = ckpt.remove_checkpoint

    def checked_remove(path: Any) -> None:
        newest = ckpt.read_pointer(tmp_path)
        assert newest is not None and newest.name.startswith("best_")
        ckpt.verify_checkpoint(newest)
        removed.append(Path(path).name)
        remove(path)

    monkeypatch.setattr(ckpt, "remove_checkpoint", checked_remove)
    _runner(
        tmp_path,
        epochs=3,
        val=True,
        interval=10,
        save_best="acc",
        custom_hooks=[_Scores("acc", [0.1, 0.2, 0.3])],
    ).run()
    assert removed == ["best_acc_epoch_1.pth", "best_acc_epoch_2.pth"]


class _CrashInEpoch(Hook):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def before_train_iter(self, runner: Runner, batch_idx: int, data_batch: Any = None) -> None:
        if runner.epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_which_checkpoint_is_best_survives_a_resume(tmp_path: Path) -> None:
    scores = [0.5, 0.9, 0.6, 0.7]  # after the crash nothing beats epoch 2's 0.9
    crashed = _runner(
        tmp_path,
        epochs=4,
        val=True,
        max_keep_ckpts=1,
        save_best="acc",
        custom_hooks=[_Scores("acc", scores), _CrashInEpoch(2)],
    )
    with pytest.raises(HookCallError, match="simulated crash"):
        crashed.run()
    assert _names(tmp_path) == ["epoch_2.pth", "best_acc_epoch_2.pth"]

    resumed = _runner(
        tmp_path, epochs=4, val=True, max_keep_ckpts=1, save_best="acc", custom_hooks=[_Scores("acc", scores)]
    )
    resumed.resume = True
    resumed.run()
    assert _names(tmp_path) == ["epoch_4.pth", "best_acc_epoch_2.pth"]
    state = dict(resumed._pm.list_name_plugin())["CheckpointHook"].state_dict()
    assert state["best"]["acc"]["score"] == 0.9
    assert state["kept"] == [str((tmp_path / "epoch_4.pth").absolute())]


def test_a_failed_save_leaves_the_hook_state_as_it_was(tmp_path: Path) -> None:
    class FailSecondSave(Hook):
        def before_save_checkpoint(self, runner: Runner, checkpoint: dict[str, Any]) -> None:
            if runner.epoch == 1:
                raise OSError("disk gone")

    runner = _runner(tmp_path, epochs=3, max_keep_ckpts=1, custom_hooks=[FailSecondSave()])
    with pytest.raises(HookCallError, match="disk gone"):
        runner.run()
    hook = dict(runner._pm.list_name_plugin())["CheckpointHook"]
    assert hook.state_dict()["kept"] == [str((tmp_path / "epoch_1.pth").absolute())]
    assert _names(tmp_path) == ["epoch_1.pth"]


def test_save_optimizer_false_saves_weights_that_load_from_accepts_and_resume_refuses(
    tmp_path: Path,
) -> None:
    _runner(tmp_path, epochs=1, save_optimizer=False).run()
    state = ckpt.load_checkpoint(tmp_path / "epoch_1.pth")
    assert "optimizer" not in state and "state_dict" in state
    resumed = _runner(tmp_path, epochs=2)
    resumed.resume = True
    with pytest.raises(ckpt.CheckpointError, match=r"save_optimizer=False.*load_from="):
        resumed.train()


def test_state_dict_roundtrip_keeps_kept_list_best_and_auto_choice() -> None:
    hook = CheckpointHook(save_best="auto", max_keep_ckpts=2)
    state = {
        "kept": ["/w/epoch_1.pth"],
        "best": {"acc": {"score": 0.5, "path": "/w/best_acc_epoch_1.pth"}},
        "rules": {"acc": "greater"},
        "removing": [],
    }
    hook.load_state_dict(state)
    assert hook.state_dict() == state
    assert hook.rules == {"acc": "greater"}
