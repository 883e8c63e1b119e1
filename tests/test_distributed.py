"""The Runner under torchrun: real 2-process gloo runs on the CPU, checked against 1 process.

Six torchrun launches of ``tests/dist_scripts/ddp_runs.py`` (one module fixture each; every
rank writes what it saw to a JSON file beside the work dirs): ``train`` (five Runners in one
process), ``sigterm`` (one rank signalled), ``sigterm_all`` (every rank), ``resume`` (from what
sigterm left), ``nodes`` (two one-process torchrun agents meeting at a c10d rendezvous
endpoint) and ``hook_error`` (a hook raises on rank 1, which then hangs). The single-process
references and the world-size checks run here, in the test process.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from pluginloop import Runner, checkpoint
from pluginloop.errors import ConfigError, DistributedError

WORLD = 2
SCRIPT = Path(__file__).resolve().parent / "dist_scripts" / "ddp_runs.py"
REPO = Path(__file__).resolve().parents[1]
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _load_script() -> ModuleType:
    # By path: tests/ is not a package, and the launched script must stay a plain file.
    spec = importlib.util.spec_from_file_location("ddp_runs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runs = _load_script()


def _free_port() -> int:
    # Port 0 lets the OS pick a free one; it stays free until torchrun binds it (a tiny race).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Launch:
    """A torchrun launch of the script: exit status, output and each rank's observations.

    ``nodes=2`` starts two torchrun agents of one process each that meet through a c10d
    rendezvous endpoint, as two machines would (docs/distributed.md's multi-node command).
    """

    def __init__(self, mode: str, out: Path, nodes: int = 1) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2 ranks on 2 cores
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        for name in TORCHRUN_VARS:  # only torchrun may set them
            env.pop(name, None)
        if nodes == 1:
            where = ["--nnodes=1", f"--nproc-per-node={WORLD}", "--master-addr=127.0.0.1",
                     f"--master-port={_free_port()}"]  # fmt: skip
        else:
            where = [f"--nnodes={nodes}", f"--nproc-per-node={WORLD // nodes}", "--rdzv-backend=c10d",
                     f"--rdzv-endpoint=127.0.0.1:{_free_port()}", "--rdzv-id=pluginloop-test"]  # fmt: skip
        cmd = [sys.executable, "-m", "torch.distributed.run", *where, str(SCRIPT), mode, str(out)]
        logs = [(out / f"{mode}_agent{n}.out", out / f"{mode}_agent{n}.err") for n in range(nodes)]
        agents = []
        for stdout, stderr in logs:
            with open(stdout, "w") as o, open(stderr, "w") as e:
                agents.append(subprocess.Popen(cmd, env=env, stdout=o, stderr=e))
        try:
            codes = [agent.wait(timeout=240) for agent in agents]
        finally:
            for agent in agents:  # a hung launch must not outlive the test
                if agent.poll() is None:
                    agent.kill()
                    agent.wait()
        self.returncode = max(abs(code) for code in codes)
        self.stdout, self.stderr = ("".join(log[i].read_text() for log in logs) for i in (0, 1))
        files = [out / f"{mode}_rank{r}.json" for r in range(WORLD)]
        missing = [f.name for f in files if not f.exists()]
        assert not missing, f"{missing} not written; torchrun said:\n{self.stderr[-4000:]}"
        self.ranks: list[dict[str, Any]] = [json.loads(f.read_text()) for f in files]
        self.left: list[str] = []  # checkpoint files in the work dir right after the launch
        self.pointer: Path | None = None  # and where last_checkpoint pointed


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the launches share (sigterm's work dir is resume's)."""
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def train(out: Path) -> Launch:
    launch = Launch("train", out)
    assert launch.returncode == 0, launch.stderr[-4000:]
    return launch


@pytest.fixture(scope="module")
def sigterm(out: Path) -> Launch:
    launch = Launch("sigterm", out)
    # What the run left, before the resume launch writes more into the same work dir.
    launch.left = sorted(p.name for p in (out / "shared").glob("*.pth"))
    launch.pointer = checkpoint.read_pointer(out / "shared")
    return launch


@pytest.fixture(scope="module")
def sigterm_all(out: Path) -> Launch:
    return Launch("sigterm_all", out)


@pytest.fixture(scope="module")
def resumed(out: Path, sigterm: Launch) -> Launch:
    launch = Launch("resume", out)
    assert launch.returncode == 0, launch.stderr[-4000:]
    return launch


@pytest.fixture(scope="module")
def two_nodes(out: Path) -> Launch:
    # Not its exit status: two agents on one host sometimes fail torchrun's own exit barrier
    # (the agent that hosts the rendezvous store leaves first), after the workers are done.
    return Launch("nodes", out, nodes=2)


@pytest.fixture(scope="module")
def hook_error(out: Path) -> Launch:
    return Launch("hook_error", out)


def _reference(work_dir: Path, **overrides: Any) -> tuple[Runner, Any]:
    """The Linear run in this (single) process with batch 2b, drawing the 2-rank run's sample order.

    Rank r of 2 reads ``perm[r::2]`` of each epoch's permutation ``perm``, so its batch k
    plus the other rank's batch k is ``perm[2bk : 2b(k+1)]``: one process with batch 2b over
    a one-replica DistributedSampler with the same seed reads exactly those batches.
    """
    kwargs = runs.linear_kwargs(work_dir, batch=2 * runs.BATCH, launcher="none", **overrides)
    dataset = kwargs["train_dataloader"].dataset
    sampler: DistributedSampler[Any] = DistributedSampler(
        dataset, num_replicas=1, rank=0, shuffle=True, seed=runs.SEED
    )
    kwargs["train_dataloader"] = DataLoader(dataset, batch_size=2 * runs.BATCH, sampler=sampler)
    probe = runs.Probe(dataset)
    kwargs["custom_hooks"] = [probe, *kwargs.get("custom_hooks", [])]
    runner = Runner(**kwargs)
    runner.run()
    return runner, probe


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Runner, Any]:
    """The 1-process, batch-2b Linear run and its Probe."""
    return _reference(tmp_path_factory.mktemp("reference"))


def _close(a: list[list[float]], b: list[list[float]], atol: float) -> bool:
    pairs = zip(a, b, strict=True)
    return all(torch.allclose(torch.tensor(x), torch.tensor(y), rtol=0, atol=atol) for x, y in pairs)


# ------------------------------------------------------------ one process, no launch


@pytest.mark.parametrize(
    ("kwargs", "key", "match"),
    [
        ({"ddp_kwargs": {"broadcast_buffer": False}}, "ddp_kwargs", "did you mean 'broadcast_buffers'"),
        ({"ddp_kwargs": [("broadcast_buffers", False)]}, "ddp_kwargs", "a dict of DistributedDataParallel"),
        ({"dist_timeout": 0}, "dist_timeout", "must be positive"),
        ({"dist_timeout": datetime.timedelta(seconds=-1)}, "dist_timeout", "must be positive"),
        ({"dist_timeout": "10"}, "dist_timeout", "seconds .a number. or a datetime.timedelta"),
    ],
)
def test_distributed_options_are_checked_at_construction(
    runner_kwargs: dict[str, Any], kwargs: dict[str, Any], key: str, match: str
) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        Runner(**runner_kwargs, **kwargs)
    assert info.value.key == key


def test_a_single_process_is_the_main_one_and_close_changes_nothing(runner_kwargs: dict[str, Any]) -> None:
    options = dict(ddp_kwargs={"find_unused_parameters": True}, dist_timeout=datetime.timedelta(seconds=5))
    with Runner(**runner_kwargs, **options) as runner:  # type: ignore[arg-type]
        assert runner.is_main_process and (runner.rank, runner.world_size) == (0, 1)
        assert runner.wrapped_model is runner.model  # no DDP, so ddp_kwargs is unused
        runner.close()
        runner.train()  # nothing was torn down: a single process runs on after close()
    assert runner.epoch == 2


# -------------------------------------------------------------------------- train


@pytest.mark.slow
def test_two_ranks_of_batch_b_train_to_the_parameters_of_one_process_of_batch_2b(
    train: Launch, reference: tuple[Runner, Any]
) -> None:
    expected = runs.params(reference[0].model)
    for obs in train.ranks:
        assert obs["linear"]["wrapped"] == "DistributedDataParallel"
        assert _close(obs["linear"]["params"], expected, atol=1e-6)
    assert train.ranks[0]["linear"]["params"] == train.ranks[1]["linear"]["params"]
    # Not vacuous: training moved the parameters away from their initial values.
    assert not _close(expected, runs.params(runs.linear_model()), atol=1e-2)


@pytest.mark.slow
def test_train_shards_are_disjoint_cover_the_dataset_and_change_every_epoch(
    train: Launch, reference: tuple[Runner, Any]
) -> None:
    shards = [obs["linear"]["epochs"] for obs in train.ranks]  # [rank][epoch] -> sample indices
    for epoch in range(runs.EPOCHS):
        first, second = shards[0][epoch], shards[1][epoch]
        assert len(first) == len(second) == runs.N_TRAIN // WORLD
        assert not set(first) & set(second)
        assert sorted(first + second) == list(range(runs.N_TRAIN))
        # The seed is the runner's: rank r reads every other sample of the 1-process order.
        order = reference[1].epochs[epoch]
        assert (first, second) == (order[0::2], order[1::2])
    assert len({tuple(epoch) for epoch in shards[0]}) == runs.EPOCHS  # reshuffled every epoch


@pytest.mark.slow
def test_val_and_test_metrics_are_exact_over_the_whole_set_and_equal_on_every_rank(
    train: Launch, reference: tuple[Runner, Any]
) -> None:
    expected = reference[1].val + reference[1].test
    for r, obs in enumerate(train.ranks):
        # No padding: 7 val samples are 4 + 3, 5 test samples 3 + 2, each read once.
        assert obs["linear"]["samplers"][1:] == ["ShardSampler", "ShardSampler"]
        assert obs["linear"]["shard_sizes"] == ([4, 3] if r == 0 else [3, 2])
        assert len(obs["linear"]["val"]) == runs.EPOCHS
        for got, want in zip(obs["linear"]["val"] + obs["linear"]["test"], expected, strict=True):
            assert got.keys() == want.keys() == {"loss", "mae"}
            assert got == pytest.approx(want, rel=0, abs=1e-9)
    assert train.ranks[0]["linear"]["val"] == train.ranks[1]["linear"]["val"]


@pytest.mark.slow
def test_sync_buffers_hook_makes_batchnorm_statistics_equal_on_every_rank(train: Launch) -> None:
    synced = [obs["bn"]["synced"] for obs in train.ranks]
    unsynced = [obs["bn"]["unsynced"] for obs in train.ranks]
    # ddp_kwargs reached DDP: without buffer broadcasting the ranks' statistics drift apart...
    assert [s["broadcast_buffers"] for s in synced + unsynced] == [False] * 4
    running = slice(2, 4)  # BatchNorm's state_dict: weight, bias, running_mean, running_var, count
    assert not _close(unsynced[0]["buffers"][running], unsynced[1]["buffers"][running], atol=1e-6)
    # ...and SyncBuffersHook averages them after each epoch.
    assert synced[0]["buffers"] == synced[1]["buffers"]


@pytest.mark.slow
def test_accumulation_all_reduces_gradients_only_on_step_iterations(train: Launch, tmp_path: Path) -> None:
    # cumulative_iters=2 over 4 iterations: steps in iterations 2 and 4, which zero the grads.
    first, second = (obs["acc"] for obs in train.ranks)
    for obs in (first, second):
        assert [grad is None for grad in obs["after_iter"]] == [False, True, False, True]
        assert len(obs["steps"]) == 2
    # Iterations 1 and 3 skipped the all-reduce: each rank holds its own shard's gradient...
    for i in (0, 2):
        assert not _close([first["after_iter"][i]], [second["after_iter"][i]], atol=1e-6)
    # ...and the steps' backward reduced the whole window's: the same on every rank.
    assert first["steps"] == second["steps"]
    assert first["params"] == second["params"]
    reference, _ = _reference(tmp_path, max_epochs=1, val_dataloader=None, test_dataloader=None,
                              default_hooks={"optimizer": dict(type="GradientCumulativeOptimizerHook",
                                                               cumulative_iters=2)})  # fmt: skip
    assert _close(train.ranks[0]["acc"]["params"], runs.params(reference.model), atol=1e-6)


@pytest.mark.slow
def test_only_rank0_writes_logs_checkpoints_and_the_pointer(train: Launch, out: Path) -> None:
    # Each rank was given its own work dir, so whatever rank 1 wrote would be in work_rank1*.
    written = {p.name for p in out.iterdir() if p.name.startswith("work_rank")}
    assert written == {"work_rank0", "work_rank0_bn_synced", "work_rank0_bn_unsynced", "work_rank0_acc",
                       "work_rank0_stop"}
    names = {p.name for p in (out / "work_rank0").iterdir()}
    assert {"ddp_epoch_1.pth", "ddp_epoch_3.pth", "last_checkpoint"} <= names
    assert any((out / "work_rank0").glob("*/*.log"))  # LoggerHook's text log
    assert checkpoint.read_pointer(out / "work_rank0") is not None
    for obs in train.ranks:
        assert obs["linear"]["rank_ws"][1] == WORLD
        assert obs["linear"]["is_main"] is (obs["linear"]["rank_ws"][0] == 0)


@pytest.mark.slow
def test_should_stop_on_one_rank_stops_every_rank_at_the_same_iteration(train: Launch) -> None:
    # Rank 1's hook set it during iteration 3 (2 from 0); without the agreement rank 0 would
    # go on alone into the next all-reduce and wait there for the timeout.
    assert [obs["stopped"] for obs in train.ranks] == [[3, 0]] * WORLD


@pytest.mark.slow
def test_phases_keep_the_group_for_joining_runners_until_close(train: Launch) -> None:
    for obs in train.ranks:
        assert obs["test_again"] == obs["linear"]["test"][-1]  # test() after train(), test()
        assert obs["group_after_joined_runs"] is True  # their run() left the first one's group
        assert obs["group_after_close"] is False
        assert obs["train_after_close"].startswith("DistributedError: this distributed runner is closed")


@pytest.mark.slow
def test_run_ends_the_group_it_made_and_the_workers_exit_cleanly(resumed: Launch, two_nodes: Launch) -> None:
    assert resumed.returncode == 0
    for launch in (resumed, two_nodes):
        # torchrun reports every worker that exits non-zero or aborts (see pluginloop.dist.teardown).
        assert "failed (exitcode" not in launch.stderr and "terminate called" not in launch.stderr
        assert [obs["group_after_run"] for obs in launch.ranks] == [False] * WORLD


@pytest.mark.slow
def test_two_single_process_nodes_meeting_at_a_rendezvous_endpoint_train_the_same(
    two_nodes: Launch, train: Launch
) -> None:
    names = ("GROUP_RANK", "RANK", "LOCAL_RANK")  # node rank, global rank, rank on the node
    assert sorted(tuple(obs["env"][name] for name in names) for obs in two_nodes.ranks) == [
        ("0", "0", "0"), ("1", "1", "0")]  # fmt: skip
    for r, obs in enumerate(two_nodes.ranks):
        assert (obs["error"], obs["iter"]) == (None, runs.EPOCHS * 4)
        assert obs["params"] == train.ranks[r]["linear"]["params"]  # the 1-node, 2-process run's


# ------------------------------------------------------------- preemption, resume


@pytest.mark.slow
def test_sigterm_on_one_rank_stops_both_at_the_same_iteration_after_one_save(
    sigterm: Launch, out: Path
) -> None:
    assert sigterm.returncode != 0
    # Rank 1 got SIGTERM during iteration 6 (5 from 0): both finish it, save, exit 128 + 15.
    assert [(obs["exit"], obs["iter"], obs["iters_run"]) for obs in sigterm.ranks] == [(143, 6, 6)] * WORLD
    assert sigterm.ranks[0]["params"] == sigterm.ranks[1]["params"]
    assert [name for name in sigterm.left if name.startswith("preempt_")] == ["preempt_iter_6.pth"]
    checkpoint.verify_checkpoint(out / "shared" / "preempt_iter_6.pth")
    assert sigterm.pointer == (out / "shared" / "preempt_iter_6.pth").absolute()
    assert "preempt_iter_6.pth" in sigterm.stdout and "resume" in sigterm.stdout


@pytest.mark.slow
def test_sigterm_on_every_rank_stops_all_at_the_first_signal(sigterm_all: Launch, out: Path) -> None:
    # Rank 0 got it during iteration 2, rank 1 during iteration 3: all stop after iteration 2.
    assert sigterm_all.returncode != 0
    assert [(obs["exit"], obs["iter"], obs["group_after_run"]) for obs in sigterm_all.ranks] == [
        (143, 2, False)] * WORLD  # fmt: skip
    assert sorted(p.name for p in (out / "shared_all").glob("preempt_*.pth")) == ["preempt_iter_2.pth"]


@pytest.mark.slow
def test_a_two_rank_checkpoint_resumes_and_ends_like_the_uninterrupted_run(
    resumed: Launch, train: Launch
) -> None:
    for r, obs in enumerate(resumed.ranks):
        assert (obs["exit"], obs["error"], obs["iter"], obs["iters_run"]) == (None, None, 12, 6)
        # The rest of epoch 2 is the uninterrupted run's, its first 2 batches skipped.
        assert obs["epochs"][0] == train.ranks[r]["linear"]["epochs"][1][2 * runs.BATCH:]
        assert obs["params"] == train.ranks[r]["linear"]["params"]  # bitwise


@pytest.mark.slow
def test_resuming_mid_epoch_with_another_world_size_is_refused_before_any_step(
    sigterm: Launch, out: Path, tmp_path: Path
) -> None:
    probe = runs.Probe()
    path = out / "shared" / "preempt_iter_6.pth"
    runner = Runner(**runs.linear_kwargs(tmp_path, launcher="none", resume=str(path), custom_hooks=[probe]))
    before = runs.params(runner.model)
    with pytest.raises(DistributedError, match=r"with world size 1: it was saved by a run of world size 2"):
        runner.run()
    assert probe.iters == 0 and runs.params(runner.model) == before


@pytest.mark.slow
def test_resuming_at_an_epoch_end_with_another_world_size_continues(
    sigterm: Launch, out: Path, tmp_path: Path
) -> None:
    path = out / "shared" / "ddp_epoch_1.pth"
    runner = Runner(**runs.linear_kwargs(tmp_path, launcher="none", resume=str(path)))
    with pytest.warns(UserWarning, match=r"saved by a run of world size 2, with world size 1"):
        runner.run()
    assert runner.epoch == runs.EPOCHS


# ------------------------------------------------------------------ a failing rank


@pytest.mark.slow
def test_a_hook_raising_on_one_rank_fails_the_others_within_the_timeout(hook_error: Launch) -> None:
    assert hook_error.returncode != 0
    failing, healthy = hook_error.ranks[1], hook_error.ranks[0]
    assert failing["error"][0] == "HookCallError"
    assert "'Boom'" in failing["error"][1] and "boom on rank 1" in failing["error"][1]
    # Rank 1 stayed alive without taking part: rank 0 learnt of it only by the timeout.
    kind, message = healthy["error"]
    assert kind == "DistributedError"
    assert message.startswith("rank 0 of 2: a collective failed")
    assert "Timed out" in message and f"({runs.TIMEOUT_S} s;" in message
    assert "Another rank most likely raised an error" in message
