"""pluginloop.dist: single-process behaviour here, collectives in real 2-process gloo runs.

The multi-process tests share one ``torch.multiprocessing.spawn`` run (a module fixture:
each rank records what it saw in a JSON file, the tests assert on both files) and one
``torchrun`` launch of this file as a script, for ``setup()`` reading torchrun's own env.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    DistributedSampler,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
    WeightedRandomSampler,
)

from pluginloop import dist as pldist
from pluginloop.errors import DistributedError

WORLD = 2
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
#: Where a process goes by default: cuda:LOCAL_RANK on a CUDA machine, else the CPU.
DEFAULT_DEVICE = torch.device("cuda", 0) if torch.cuda.is_available() else CPU


def _free_port() -> int:
    # Port 0 lets the OS pick a free one; it stays free until a rank binds it (a tiny race).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _indices(loader: DataLoader[Any]) -> list[int]:
    return [int(i) for (batch,) in loader for i in batch]


def _info_list(info: pldist.DistInfo) -> list[Any]:
    return [info.rank, info.world_size, info.local_rank, str(info.device), info.initialized_here]


def _grad(module: nn.Linear) -> Any:
    assert module.weight.grad is not None
    return module.weight.grad.tolist()


@pytest.fixture
def no_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank 1 of 2 as torchrun would describe it; nothing listens on the port."""
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**env, "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(name, value)


# ---------------------------------------------------------------- single process


def test_setup_without_torchrun_env_is_a_single_process(no_torchrun_env: None) -> None:
    info = pldist.setup()
    assert info == pldist.DistInfo(0, 1, 0, DEFAULT_DEVICE, initialized_here=False)
    assert not torch.distributed.is_initialized()
    assert (pldist.is_distributed(), pldist.get_rank(), pldist.get_world_size()) == (False, 0, 1)
    assert pldist.is_main_process()
    pldist.teardown(info)  # nothing to destroy, must not raise


def test_launcher_none_ignores_torchrun_env(torchrun_env: None) -> None:
    info = pldist.setup(launcher="none")
    assert info == pldist.DistInfo(0, 1, 0, DEFAULT_DEVICE, initialized_here=False)
    assert not torch.distributed.is_initialized()


def test_world_size_one_creates_no_group(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    for name, value in {**env, "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    assert pldist.setup() == pldist.DistInfo(0, 1, 0, DEFAULT_DEVICE, initialized_here=False)
    assert not torch.distributed.is_initialized()


def test_explicit_device_wins(no_torchrun_env: None) -> None:
    assert pldist.setup(device="meta").device == torch.device("meta")
    assert pldist.setup(launcher="none", device=CPU).device == CPU


def test_unknown_launcher_lists_the_valid_ones() -> None:
    with pytest.raises(DistributedError, match=r"unknown launcher 'slurm'.*'auto'.*'none'"):
        pldist.setup(launcher="slurm")


def test_partial_torchrun_env_names_the_missing_variables(
    no_torchrun_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistributedError) as excinfo:
        pldist.setup()
    missing = str(excinfo.value).split(" not set")[0]
    assert missing == "incomplete torchrun environment: LOCAL_RANK, MASTER_ADDR, MASTER_PORT"
    assert "launcher='none'" in str(excinfo.value)


@pytest.mark.parametrize(
    ("name", "value", "match"),
    [("RANK", "2", "RANK=2 is out of range"), ("WORLD_SIZE", "two", "WORLD_SIZE='two'")],
)
def test_bad_torchrun_values_are_refused(
    torchrun_env: None, monkeypatch: pytest.MonkeyPatch, name: str, value: str, match: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(DistributedError, match=match):
        pldist.setup()


def test_helpers_are_identity_in_a_single_process(no_torchrun_env: None) -> None:
    pldist.barrier()
    t = torch.tensor([1.0, 2.0])
    assert pldist.all_reduce_sum(t) is t and t.tolist() == [1.0, 2.0]
    assert pldist.all_reduce_mean(t) is t and t.tolist() == [1.0, 2.0]
    assert pldist.any_rank(True, CPU) and not pldist.any_rank(False, "cpu")
    assert pldist.reduce_weighted_means({"acc": 0.5}, 3, CPU) == {"acc": 0.5}
    obj = {"a": [1]}
    assert pldist.broadcast_object(obj) is obj
    bn = nn.BatchNorm1d(2)
    bn(torch.randn(4, 2))
    before = [b.clone() for b in bn.buffers()]
    pldist.sync_buffers(bn)
    assert all(torch.equal(a, b) for a, b in zip(bn.buffers(), before, strict=True))


def test_all_reduce_mean_refuses_integer_tensors() -> None:
    with pytest.raises(DistributedError, match=r"floating-point tensor, got torch\.int64"):
        pldist.all_reduce_mean(torch.tensor([1, 2]))


def test_model_helpers_pass_through_in_a_single_process(no_torchrun_env: None) -> None:
    model = nn.Linear(2, 1)
    info = pldist.setup()
    assert pldist.wrap_model(model, info) is model
    assert pldist.unwrap_model(model) is model
    with pldist.no_sync(model):
        model(torch.ones(1, 2)).sum().backward()
    loader = DataLoader(TensorDataset(torch.arange(4)), batch_size=2)
    assert pldist.shard_dataloader(loader, shuffle=False, seed=0) is loader


def test_loader_shuffles_iff_the_sampler_is_random() -> None:
    ds = TensorDataset(torch.arange(8))
    assert pldist.loader_shuffles(DataLoader(ds, shuffle=True))
    assert not pldist.loader_shuffles(DataLoader(ds))
    random_batches = BatchSampler(RandomSampler(ds), 2, drop_last=False)
    assert pldist.loader_shuffles(DataLoader(ds, batch_sampler=random_batches))
    assert pldist.loader_shuffles(DataLoader(ds, sampler=DistributedSampler(ds, 2, 0)))


# ------------------------------------------- shard_dataloader in a pretend 2-rank world
# DistributedSampler takes rank and world size explicitly, so no process group is needed
# to check what shard_dataloader builds; the real run below checks what the shards hold.


@pytest.fixture
def as_rank1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pldist, "is_distributed", lambda: True)
    monkeypatch.setattr(pldist, "get_world_size", lambda: 2)
    monkeypatch.setattr(pldist, "get_rank", lambda: 1)


def _collate(batch: list[Any]) -> list[Any]:
    return batch


def _init_worker(worker_id: int) -> None:
    pass


def test_shard_dataloader_keeps_every_loader_setting(as_rank1: None) -> None:
    ds = TensorDataset(torch.arange(10))
    gen = torch.Generator()
    loader = DataLoader(
        ds, batch_size=3, shuffle=True, num_workers=1, collate_fn=_collate, pin_memory=False,
        drop_last=True, timeout=5.0, worker_init_fn=_init_worker, generator=gen,
        prefetch_factor=4, persistent_workers=True, multiprocessing_context="spawn",
    )  # fmt: skip
    sharded = pldist.shard_dataloader(loader, shuffle=pldist.loader_shuffles(loader), seed=7)
    sampler = sharded.sampler
    assert isinstance(sampler, DistributedSampler)
    assert (sampler.num_replicas, sampler.rank, sampler.shuffle, sampler.seed) == (2, 1, True, 7)
    assert not sampler.drop_last
    assert sharded.dataset is ds
    for name in ("batch_size", "num_workers", "collate_fn", "pin_memory", "drop_last", "timeout",
                 "worker_init_fn", "generator", "prefetch_factor", "persistent_workers",
                 "multiprocessing_context"):  # fmt: skip
        assert getattr(sharded, name) == getattr(loader, name), name


def test_shard_dataloader_takes_batch_size_from_a_given_batch_sampler(as_rank1: None) -> None:
    ds = TensorDataset(torch.arange(9))
    loader = DataLoader(ds, batch_sampler=BatchSampler(SequentialSampler(ds), 4, drop_last=True))
    sharded = pldist.shard_dataloader(loader, shuffle=False, seed=0, drop_last=True)
    assert (sharded.batch_size, sharded.drop_last) == (4, True)
    assert isinstance(sharded.sampler, DistributedSampler) and sharded.sampler.drop_last
    assert _indices(sharded) == [1, 3, 5, 7]  # rank 1 of 2, tail dropped: 8 of 9 samples


class _BucketBatchSampler(BatchSampler):
    pass


@pytest.mark.parametrize(
    "make",
    [
        lambda ds: DataLoader(ds, batch_sampler=_BucketBatchSampler(SequentialSampler(ds), 2, True)),
        lambda ds: DataLoader(ds, batch_sampler=[[0, 1], [2, 3]]),
        lambda ds: DataLoader(ds, sampler=WeightedRandomSampler([1.0] * 4, 4)),
        lambda ds: DataLoader(ds, sampler=RandomSampler(ds, replacement=True)),
    ],
    ids=["batch-sampler-subclass", "list-of-batches", "weighted-sampler", "with-replacement"],
)
def test_shard_dataloader_refuses_what_it_cannot_shard_faithfully(as_rank1: None, make: Any) -> None:
    with pytest.raises(DistributedError, match=r"shard it yourself .*DistributedSampler"):
        pldist.shard_dataloader(make(TensorDataset(torch.arange(4))), shuffle=False, seed=0)


def test_shard_dataloader_leaves_a_sharded_loader_alone(as_rank1: None) -> None:
    ds = TensorDataset(torch.arange(4))
    plain = DataLoader(ds, sampler=DistributedSampler(ds, 2, 1))
    bucketed = _BucketBatchSampler(DistributedSampler(ds, 2, 1), 2, drop_last=False)
    batched = DataLoader(ds, batch_sampler=bucketed)
    assert pldist.shard_dataloader(plain, shuffle=True, seed=0) is plain
    assert pldist.shard_dataloader(batched, shuffle=True, seed=0) is batched


class _Stream(IterableDataset[int]):
    def __iter__(self) -> Iterator[int]:
        return iter(range(4))


def test_shard_dataloader_warns_and_leaves_an_iterable_dataset(as_rank1: None) -> None:
    loader = DataLoader(_Stream(), batch_size=2)
    with pytest.warns(UserWarning, match="cannot shard an IterableDataset"):
        assert pldist.shard_dataloader(loader, shuffle=False, seed=0) is loader


def test_shard_dataloader_warns_that_a_subclass_becomes_a_dataloader(as_rank1: None) -> None:
    class MyLoader(DataLoader[Any]):
        pass

    loader = MyLoader(TensorDataset(torch.arange(4)))
    with pytest.warns(UserWarning, match="plain DataLoader in place of MyLoader"):
        assert type(pldist.shard_dataloader(loader, shuffle=False, seed=0)) is DataLoader


@pytest.mark.parametrize(("size", "world"), [(7, 2), (8, 2), (5, 3), (3, 3), (10, 4)])
def test_shard_sampler_gives_each_index_to_exactly_one_rank(size: int, world: int) -> None:
    shards = [list(pldist.ShardSampler(size, world, rank)) for rank in range(world)]
    assert sorted(i for shard in shards for i in shard) == list(range(size))  # no index twice
    assert [len(pldist.ShardSampler(size, world, r)) for r in range(world)] == [len(s) for s in shards]
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_exact_shard_dataloader_pads_nothing(as_rank1: None) -> None:
    loader = DataLoader(TensorDataset(torch.arange(7)), batch_size=2)
    sharded = pldist.shard_dataloader(loader, shuffle=False, seed=0, exact=True)
    assert isinstance(sharded.sampler, pldist.ShardSampler)
    assert _indices(sharded) == [1, 3, 5]  # a DistributedSampler would repeat sample 0 here
    assert pldist.shard_dataloader(sharded, shuffle=False, seed=0, exact=True) is sharded
    with pytest.raises(ValueError, match="exact=True shards in order"):
        pldist.shard_dataloader(loader, shuffle=True, seed=0, exact=True)
    tiny = DataLoader(TensorDataset(torch.arange(1)))
    with pytest.raises(DistributedError, match="evaluation set of 1 samples over 2 ranks"):
        pldist.shard_dataloader(tiny, shuffle=False, seed=0, exact=True)


def test_a_second_group_in_one_process_is_refused_before_any_rendezvous(
    torchrun_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pldist, "_destroyed", [True])  # as after a teardown in this process
    with pytest.raises(DistributedError, match="already created and destroyed a process group"):
        pldist.setup()
    assert not torch.distributed.is_initialized()


def test_max_over_ranks_is_the_value_in_a_single_process(no_torchrun_env: None) -> None:
    assert pldist.max_over_ranks(15) == 15


def test_peer_failures_are_told_from_other_errors() -> None:
    gloo = RuntimeError("[../third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
                        "10000ms for recv operation to complete")  # fmt: skip
    assert pldist.is_peer_failure(gloo)
    assert pldist.is_peer_failure(RuntimeError("Connection closed by peer [127.0.0.1]:1234"))
    assert pldist.is_peer_failure(torch.distributed.DistBackendError("NCCL communicator was aborted"))
    assert not pldist.is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not pldist.is_peer_failure(ValueError("gloo"))
    error = pldist.peer_failure_error(gloo, "in the loop", datetime.timedelta(seconds=12))
    assert "a collective failed in the loop: RuntimeError: [" in str(error)
    assert "(12 s; set it with Runner(dist_timeout=seconds))" in str(error)


def test_resume_under_another_world_size_is_refused_mid_epoch_and_warned_at_epoch_ends() -> None:
    pldist.check_resume_world_size({"world_size": 2, "inner_iter": 3}, 2, "a.pth")  # same size: fine
    pldist.check_resume_world_size({"inner_iter": 3}, 4, "a.pth")  # no record (older file): fine
    with pytest.raises(DistributedError) as excinfo:
        pldist.check_resume_world_size({"world_size": 2, "epoch": 1, "inner_iter": 3}, 4, "a.pth")
    message = str(excinfo.value)
    assert "cannot resume a.pth with world size 4: it was saved by a run of world size 2" in message
    assert "3 iterations into epoch 2" in message and "--nproc-per-node=2" in message
    with pytest.warns(UserWarning, match=r"saved by a run of world size 2, with world size 4"):
        pldist.check_resume_world_size({"world_size": 2, "epoch": 2, "inner_iter": 0}, 4, "a.pth")


# ------------------------------------------------------ real 2-process gloo run (spawn)


def _spawn_worker(rank: int, port: int, out_dir: str) -> None:
    """One rank: set torchrun's variables, then record what every helper does."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    torch.set_num_threads(1)
    obs: dict[str, Any] = {}
    # A short timeout turns a hang (one rank skipping a collective) into a failure.
    info = pldist.setup(timeout=datetime.timedelta(seconds=30))
    obs["info"] = _info_list(info)
    obs["queries"] = [pldist.is_distributed(), pldist.get_rank(), pldist.get_world_size(),
                      pldist.is_main_process()]  # fmt: skip
    joined = pldist.setup()  # the group exists now: join it without owning it
    pldist.teardown(joined)
    obs["joined"] = [joined.rank, joined.initialized_here, torch.distributed.is_initialized()]
    pldist.barrier()

    obs["sum"] = pldist.all_reduce_sum(torch.tensor([rank + 1.0])).tolist()
    obs["mean"] = pldist.all_reduce_mean(torch.tensor([rank + 1.0])).tolist()
    obs["any_rank1"] = pldist.any_rank(rank == 1, CPU)
    obs["any_none"] = pldist.any_rank(False, CPU)
    obs["broadcast"] = pldist.broadcast_object({"from": rank}, src=1)
    obs["max"] = pldist.max_over_ranks(10 * rank + 3)

    # Rank 0: 3 samples, means acc .5 / loss 2; rank 1: 1 sample, in another dict order.
    local = {"acc": 0.5, "loss": 2.0} if rank == 0 else {"loss": 1.0, "acc": 1.0}
    obs["means"] = pldist.reduce_weighted_means(local, 3 if rank == 0 else 1, CPU)
    # A rank that saw no samples (NaN means) must not poison the result.
    nan_or_3 = {"acc": float("nan")} if rank == 0 else {"acc": 3.0}
    obs["means_empty_rank"] = pldist.reduce_weighted_means(nan_or_3, 0 if rank == 0 else 2, CPU)
    try:
        pldist.reduce_weighted_means({"acc" if rank == 0 else "accuracy": 1.0}, 1, CPU)
        obs["name_mismatch"] = None
    except DistributedError as e:
        obs["name_mismatch"] = str(e)

    # BatchNorm under DDP without buffer broadcasting: ranks see different data, so the
    # running stats drift apart (and rank r counts r + 1 batches) until sync_buffers.
    torch.manual_seed(0)
    bn = pldist.wrap_model(nn.BatchNorm1d(3), info, broadcast_buffers=False)
    with torch.no_grad():
        for _ in range(rank + 1):
            bn(torch.randn(8, 3) + 10.0 * rank)
    # [running_mean, running_var, num_batches_tracked]
    obs["bn_before"] = [b.tolist() for b in pldist.unwrap_model(bn).buffers()]
    pldist.sync_buffers(bn)
    obs["bn_after"] = [b.tolist() for b in pldist.unwrap_model(bn).buffers()]

    # Linear without bias: the gradient of sum(x @ w.T) is the column sums of x, here
    # [2(r+1), 2(r+1)] per rank; their mean over ranks is [3, 3].
    torch.manual_seed(0)
    linear = nn.Linear(2, 1, bias=False)
    model = pldist.wrap_model(linear, info)
    obs["wrapped"] = [type(model).__name__, pldist.unwrap_model(model) is linear,
                      pldist.wrap_model(model, info) is model]  # fmt: skip
    x = torch.full((2, 2), rank + 1.0)
    with pldist.no_sync(model):
        model(x).sum().backward()
    obs["grad_no_sync"] = _grad(linear)
    model(x).sum().backward()  # synced: the mean of (no_sync grad + this grad)
    obs["grad_accumulated"] = _grad(linear)
    linear.weight.grad = None
    model(x).sum().backward()
    obs["grad_synced"] = _grad(linear)

    ds = TensorDataset(torch.arange(10))
    loader = DataLoader(ds, batch_size=3, shuffle=True)
    sharded = pldist.shard_dataloader(loader, shuffle=pldist.loader_shuffles(loader), seed=7)
    obs["shard_again_same"] = pldist.shard_dataloader(sharded, shuffle=True, seed=7) is sharded
    obs["batch_sizes"] = [len(b) for (b,) in sharded]
    obs["epochs"] = []
    for epoch in (0, 1):
        sharded.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        obs["epochs"].append(_indices(sharded))

    del bn, model  # DDP holds the group: release it before the group is destroyed (gloo may abort)
    pldist.teardown(info)
    obs["initialized_after_teardown"] = torch.distributed.is_initialized()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(obs))


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """What each of the two ranks of one spawned gloo run observed."""
    out_dir = tmp_path_factory.mktemp("spawn")
    with pytest.MonkeyPatch.context() as mp_env:
        mp_env.setenv("OMP_NUM_THREADS", "1")  # inherited by the children: 2 cores, 2 ranks
        mp.spawn(  # type: ignore[attr-defined, no-untyped-call]  # untyped in torch
            _spawn_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD
        )
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.mark.slow
def test_setup_under_torchrun_env_creates_and_teardown_destroys_the_group(
    ranks: list[dict[str, Any]],
) -> None:
    for r, obs in enumerate(ranks):
        assert obs["info"] == [r, WORLD, r, "cpu", True]
        assert obs["queries"] == [True, r, WORLD, r == 0]
        assert obs["joined"] == [r, False, True]  # joining and its teardown leave the group
        assert obs["initialized_after_teardown"] is False


@pytest.mark.slow
def test_reductions_and_broadcast_agree_on_every_rank(ranks: list[dict[str, Any]]) -> None:
    for obs in ranks:
        assert obs["sum"] == [3.0] and obs["mean"] == [1.5]
        assert obs["broadcast"] == {"from": 1}


@pytest.mark.slow
def test_any_rank_is_true_everywhere_when_only_rank1_says_so(ranks: list[dict[str, Any]]) -> None:
    assert [obs["any_rank1"] for obs in ranks] == [True, True]
    assert [obs["any_none"] for obs in ranks] == [False, False]
    assert [obs["max"] for obs in ranks] == [13, 13]


@pytest.mark.slow
def test_reduce_weighted_means_gives_the_global_means_on_every_rank(
    ranks: list[dict[str, Any]],
) -> None:
    # acc: (0.5 * 3 + 1.0 * 1) / 4; loss: (2.0 * 3 + 1.0 * 1) / 4.
    assert [obs["means"] for obs in ranks] == [{"acc": 0.625, "loss": 1.75}] * WORLD
    assert [obs["means_empty_rank"] for obs in ranks] == [{"acc": 3.0}] * WORLD
    for obs in ranks:
        assert "different metric names" in obs["name_mismatch"]


@pytest.mark.slow
def test_sync_buffers_averages_running_stats_and_copies_counters_from_rank0(
    ranks: list[dict[str, Any]],
) -> None:
    before = [torch.tensor(obs["bn_before"][:2]) for obs in ranks]
    assert not torch.allclose(before[0], before[1])
    assert [obs["bn_before"][2] for obs in ranks] == [1, 2]
    expected = (before[0] + before[1]) / 2
    for obs in ranks:
        assert torch.allclose(torch.tensor(obs["bn_after"][:2]), expected)
        assert obs["bn_after"][2] == 1  # rank 0's count, not an average of counters
    assert ranks[0]["bn_after"] == ranks[1]["bn_after"]


@pytest.mark.slow
def test_wrap_model_gives_ddp_and_no_sync_skips_the_gradient_all_reduce(
    ranks: list[dict[str, Any]],
) -> None:
    for r, obs in enumerate(ranks):
        assert obs["wrapped"] == ["DistributedDataParallel", True, True]
        assert obs["grad_no_sync"] == [[2.0 * (r + 1)] * 2]  # local only
        assert obs["grad_accumulated"] == [[6.0, 6.0]]  # mean over ranks of 2 local grads
        assert obs["grad_synced"] == [[3.0, 3.0]]


@pytest.mark.slow
def test_shard_dataloader_shards_are_disjoint_complete_and_reshuffled_by_set_epoch(
    ranks: list[dict[str, Any]],
) -> None:
    for obs in ranks:
        assert obs["shard_again_same"] is True
        assert obs["batch_sizes"] == [3, 2]  # 5 of 10 samples each, batch_size kept
    for epoch in (0, 1):
        shard0, shard1 = (obs["epochs"][epoch] for obs in ranks)
        assert not set(shard0) & set(shard1)
        assert sorted(shard0 + shard1) == list(range(10))
    assert [obs["epochs"][0] for obs in ranks] != [obs["epochs"][1] for obs in ranks]


# ------------------------------------------------------------- real torchrun launch


def _torchrun_main(out_dir: Path) -> None:
    """Run by torchrun: setup() must find everything in the environment torchrun made."""
    torch.set_num_threads(1)
    env = {name: os.environ[name] for name in TORCHRUN_VARS}
    info = pldist.setup(timeout=datetime.timedelta(seconds=30))
    total = pldist.all_reduce_sum(torch.tensor([1.0])).item()
    pldist.teardown(info)
    obs = {"env": env, "info": _info_list(info), "total": total,
           "initialized_after_teardown": torch.distributed.is_initialized()}  # fmt: skip
    (out_dir / f"rank{info.rank}.json").write_text(json.dumps(obs))


@pytest.mark.slow
def test_setup_auto_reads_the_environment_torchrun_exports(tmp_path: Path) -> None:
    port = _free_port()
    pythonpath = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}
    for name in TORCHRUN_VARS:  # only torchrun may set them
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
           f"--nproc-per-node={WORLD}", "--master-addr=127.0.0.1", f"--master-port={port}",
           __file__, str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in range(WORLD):
        obs = json.loads((tmp_path / f"rank{r}.json").read_text())
        assert obs["info"] == [r, WORLD, r, "cpu", True]
        assert obs["env"]["MASTER_PORT"] == str(port) and obs["env"]["LOCAL_RANK"] == str(r)
        assert obs["total"] == WORLD
        assert obs["initialized_after_teardown"] is False


if __name__ == "__main__":
    _torchrun_main(Path(sys.argv[1]))
