"""pluginloop.checkpoint against real files: torn, truncated, altered, full disk, kill -9."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from pluginloop import checkpoint as ckpt
from pluginloop.checkpoint import (
    CheckpointWarning,
    find_resumable,
    list_checkpoints,
    load_checkpoint,
    read_pointer,
    remove_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
    verify_checkpoint,
    write_pointer,
)
from pluginloop.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]


def _state(value: float = 1.0, numel: int = 1000) -> dict[str, Any]:
    return {
        "model": {"weight": torch.full((numel,), value), "steps": torch.arange(5)},
        "optimizer": {"state": {0: {"momentum": torch.ones(3, 3)}}, "param_groups": [{"lr": 0.1}]},
        "meta": {"epoch": 3, "loss": 0.25, "name": "run-1", "milestones": [8, 11], "none": None},
        "flags": torch.tensor([True, False]),
    }


def _debris(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if ".tmp-" in p.name)


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


@pytest.fixture
def no_torch_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything is unpickled: damage must be found before torch.load."""

    def forbidden(*args: object, **kwargs: object) -> None:
        pytest.fail("torch.load was called on a checkpoint that should have failed verification")

    monkeypatch.setattr(torch, "load", forbidden)


# -- save and load ---------------------------------------------------------------------------


def test_roundtrip_keeps_tensors_nested_dicts_and_plain_values(tmp_path: Path) -> None:
    state = _state(2.5)
    path = save_checkpoint(state, tmp_path / "epoch_3.pth", meta={"epoch": 3, "iter": 120})

    loaded = load_checkpoint(path)

    assert path == tmp_path / "epoch_3.pth"
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])
    assert torch.equal(loaded["model"]["steps"], torch.arange(5))
    assert torch.equal(loaded["optimizer"]["state"][0]["momentum"], torch.ones(3, 3))
    assert torch.equal(loaded["flags"], torch.tensor([True, False]))
    assert loaded["optimizer"]["param_groups"] == [{"lr": 0.1}]
    assert loaded["meta"] == state["meta"]


def test_record_holds_format_name_size_checksum_and_meta(tmp_path: Path) -> None:
    path = save_checkpoint(_state(), tmp_path / "iter_120.pth", meta={"epoch": 3, "step": 120})

    record = json.loads(_record(path).read_text())
    content = path.read_bytes()

    assert record == {
        "format": 1,
        "file": "iter_120.pth",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),  # hashed while writing == on disk
        "epoch": 3,
        "step": 120,
    }
    assert verify_checkpoint(path) == record


def test_save_leaves_only_the_checkpoint_and_its_record(tmp_path: Path) -> None:
    save_checkpoint(_state(), tmp_path / "epoch_1.pth")
    save_checkpoint(_state(2.0), tmp_path / "epoch_1.pth")  # overwriting the same name

    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_1.pth", "epoch_1.pth.meta.json"]
    assert load_checkpoint(tmp_path / "epoch_1.pth")["model"]["weight"][0] == 2.0


def test_meta_cannot_overwrite_the_records_own_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        save_checkpoint(_state(), tmp_path / "a.pth", meta={"sha256": "0" * 64})
    assert list(tmp_path.iterdir()) == []


def test_unserializable_state_raises_checkpoint_error_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"a\.pth") as info:
        save_checkpoint({"fn": lambda: 0}, tmp_path / "a.pth")

    assert info.value.__cause__ is not None
    assert list(tmp_path.iterdir()) == []


class _RunsCode:
    """An object whose unpickling runs a call: what a malicious checkpoint would hold."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return os.mkdir, (str(self.marker),)


def test_loading_cannot_run_code_pickled_in_a_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = save_checkpoint({"payload": _RunsCode(marker)}, tmp_path / "evil.pth")

    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_checkpoint(path)
    assert not marker.exists()

    # The payload is real: an unrestricted load runs it. This is what weights_only prevents.
    torch.load(path, weights_only=False)
    assert marker.exists()


# -- damage is found before unpickling -------------------------------------------------------


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _empty(path: Path) -> None:
    os.truncate(path, 0)


def _flip_middle_byte(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))


def _append(path: Path) -> None:
    with open(path, "ab") as file:
        file.write(b"junk")


def _drop_record(path: Path) -> None:
    _record(path).unlink()


def _delete(path: Path) -> None:
    path.unlink()


DAMAGE = [
    pytest.param(_truncate, r"truncated: \d+ bytes on disk, \d+ recorded", id="truncated"),
    pytest.param(_empty, r"empty \(0 bytes\)", id="zero-length"),
    pytest.param(_flip_middle_byte, r"content altered: sha256 \w+ on disk, \w+ recorded", id="flip"),
    pytest.param(_append, r"resized: \d+ bytes on disk, \d+ recorded", id="appended"),
    pytest.param(_drop_record, r"has no record .*verify=False", id="no-record"),
    pytest.param(_delete, r"is missing", id="missing"),
]


@pytest.mark.parametrize(("damage", "problem"), DAMAGE)
@pytest.mark.usefixtures("no_torch_load")
def test_damaged_checkpoint_is_refused_before_unpickling(
    tmp_path: Path, damage: Callable[[Path], None], problem: str
) -> None:
    path = save_checkpoint(_state(numel=100_000), tmp_path / "epoch_2.pth")
    damage(path)

    with pytest.raises(CheckpointError, match=problem) as info:
        load_checkpoint(path)

    assert str(path) in str(info.value)
    assert info.value.path == path


@pytest.mark.parametrize(("damage", "problem"), DAMAGE)
def test_verify_names_the_file_and_the_damage(
    tmp_path: Path, damage: Callable[[Path], None], problem: str
) -> None:
    path = save_checkpoint(_state(numel=100_000), tmp_path / "epoch_2.pth")
    damage(path)

    with pytest.raises(CheckpointError, match=problem) as info:
        verify_checkpoint(path)
    assert str(path) in str(info.value)


def test_foreign_file_without_record_loads_with_verify_false(tmp_path: Path) -> None:
    path = tmp_path / "pretrained.pth"
    torch.save({"weight": torch.ones(2)}, path)

    with pytest.raises(CheckpointError, match="verify=False"):
        load_checkpoint(path)
    assert torch.equal(load_checkpoint(path, verify=False)["weight"], torch.ones(2))


def test_unloadable_file_raises_checkpoint_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"not a zip file at all")

    with pytest.raises(CheckpointError, match=r"garbage\.pth .*cannot be loaded") as info:
        load_checkpoint(path, verify=False)
    assert info.value.__cause__ is not None


# -- listing, pointer, resume ----------------------------------------------------------------


def test_list_checkpoints_orders_by_step_then_epoch_and_ignores_files_without_record(
    tmp_path: Path,
) -> None:
    late = save_checkpoint(_state(), tmp_path / "iter_20.pth", meta={"step": 20, "epoch": 1})
    early = save_checkpoint(_state(), tmp_path / "iter_10.pth", meta={"step": 10, "epoch": 0})
    same_step = save_checkpoint(_state(), tmp_path / "z.pth", meta={"step": 10, "epoch": 1})
    torch.save({}, tmp_path / "foreign.pth")
    _record(tmp_path / "gone.pth").write_text("{}")  # a record whose file is missing

    assert list_checkpoints(tmp_path) == [early, same_step, late]
    assert list_checkpoints(tmp_path / "missing-dir") == []


def test_pointer_roundtrip_is_absolute_and_absent_pointer_reads_none(tmp_path: Path) -> None:
    assert read_pointer(tmp_path) is None
    path = save_checkpoint(_state(), tmp_path / "epoch_1.pth")

    write_pointer(tmp_path, path)

    assert read_pointer(tmp_path) == path.absolute()
    assert (tmp_path / "last_checkpoint").read_text() == f"{path.absolute()}\n"
    assert _debris(tmp_path) == []


def test_pointer_refuses_a_missing_target(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        write_pointer(tmp_path, tmp_path / "never_saved.pth")
    assert read_pointer(tmp_path) is None


def test_find_resumable_prefers_the_pointer(tmp_path: Path) -> None:
    older = save_checkpoint(_state(), tmp_path / "iter_1.pth", meta={"step": 1})
    write_pointer(tmp_path, older)
    # Killed after the save, before the pointer moved: the pointer still names `older`.
    save_checkpoint(_state(), tmp_path / "iter_2.pth", meta={"step": 2})

    assert find_resumable(tmp_path) == older.absolute()


def test_find_resumable_falls_back_from_damaged_newest_with_a_warning(tmp_path: Path) -> None:
    paths = [
        save_checkpoint(_state(float(i)), tmp_path / f"epoch_{i}.pth", meta={"epoch": i}) for i in (1, 2, 3)
    ]
    write_pointer(tmp_path, paths[-1])
    _truncate(paths[-1])

    with pytest.warns(CheckpointWarning, match=r"epoch_3\.pth truncated"):
        found = find_resumable(tmp_path)

    assert found == paths[1]
    assert load_checkpoint(found)["model"]["weight"][0] == 2.0


def test_find_resumable_returns_none_when_nothing_verifies(tmp_path: Path) -> None:
    assert find_resumable(tmp_path) is None
    first = save_checkpoint(_state(), tmp_path / "epoch_1.pth", meta={"epoch": 1})
    second = save_checkpoint(_state(), tmp_path / "epoch_2.pth", meta={"epoch": 2})
    _flip_middle_byte(first)
    _empty(second)

    with pytest.warns(CheckpointWarning) as caught:
        assert find_resumable(tmp_path) is None

    messages = [str(w.message) for w in caught]
    assert any("epoch_2.pth is empty" in m for m in messages)
    assert any("epoch_1.pth content altered" in m for m in messages)


def test_find_resumable_warns_when_the_pointer_names_a_missing_file(tmp_path: Path) -> None:
    kept = save_checkpoint(_state(), tmp_path / "epoch_1.pth", meta={"epoch": 1})
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "epoch_9.pth"))

    with pytest.warns(CheckpointWarning, match=r"epoch_9\.pth, which does not exist"):
        assert find_resumable(tmp_path) == kept


def test_find_resumable_reads_the_pointer_from_work_dir(tmp_path: Path) -> None:
    out_dir, work_dir = tmp_path / "out", tmp_path / "work"
    out_dir.mkdir()
    work_dir.mkdir()
    first = save_checkpoint(_state(), out_dir / "epoch_1.pth", meta={"epoch": 1})
    save_checkpoint(_state(), out_dir / "epoch_2.pth", meta={"epoch": 2})
    write_pointer(work_dir, first)

    assert find_resumable(out_dir, work_dir) == first.absolute()


def test_remove_checkpoint_deletes_file_and_record_and_tolerates_missing(tmp_path: Path) -> None:
    path = save_checkpoint(_state(), tmp_path / "epoch_1.pth")

    remove_checkpoint(path)
    remove_checkpoint(path)

    assert list(tmp_path.iterdir()) == []


def test_remove_stale_temp_files_removes_only_temp_files(tmp_path: Path) -> None:
    keep = [
        "epoch_1.pth",
        "epoch_1.pth.meta.json",
        ".hidden",
        "x.tmp-1",
        ".a.tmp-pid",
        "last_checkpoint",
    ]
    stale = [".epoch_2.pth.tmp-999999", ".epoch_2.pth.meta.json.tmp-17", ".last_checkpoint.tmp-3"]
    for name in keep + stale:
        (tmp_path / name).write_bytes(b"x")

    removed = remove_stale_temp_files(tmp_path)

    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name fsynced fds")
def test_save_syncs_each_file_before_renaming_it_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}")).name))
        real_fsync(fd)

    def replace(src: Path, dst: Path) -> None:
        events.append(("replace", f"{Path(src).name} -> {Path(dst).name}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    save_checkpoint(_state(), tmp_path / "e.pth")

    pid = os.getpid()
    assert events == [
        ("fsync", f".e.pth.tmp-{pid}"),
        ("fsync", f".e.pth.meta.json.tmp-{pid}"),
        ("replace", f".e.pth.tmp-{pid} -> e.pth"),
        ("fsync", tmp_path.name),
        ("replace", f".e.pth.meta.json.tmp-{pid} -> e.pth.meta.json"),
        ("fsync", tmp_path.name),
    ]


# -- full disk -------------------------------------------------------------------------------


class _FillingDisk:
    """Make the checkpoint module's writes fail like a full disk after ``budget`` bytes."""

    def __init__(self, budget: int, code: int, only: str = "") -> None:
        self.budget, self.code, self.only = budget, code, only
        self.written: list[Path] = []

    def open(self, file: Path, mode: str = "r") -> io.FileIO:
        if "w" in mode:
            self.written.append(Path(file))
        if "w" not in mode or self.only not in str(file):
            return io.FileIO(file, mode.replace("b", ""))
        disk = self

        class Full(io.FileIO):
            def write(self, data: Any) -> int:
                size = len(memoryview(data).cast("B"))
                if size > disk.budget:
                    raise OSError(disk.code, os.strerror(disk.code), str(file))
                disk.budget -= size
                return super().write(data)

        return Full(file, "w")


@pytest.fixture(params=[errno.ENOSPC, errno.EDQUOT], ids=["ENOSPC", "EDQUOT"])
def fill_disk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Callable[..., _FillingDisk]:
    """``fill(budget, only)``: writes to files whose path contains ``only`` fail after ``budget`` bytes."""

    def fill(budget: int, only: str = "") -> _FillingDisk:
        disk = _FillingDisk(budget, request.param, only)
        # The module looks `open` up in its globals first, so this reaches every write it makes.
        monkeypatch.setattr(ckpt, "open", disk.open, raising=False)
        return disk

    return fill


@pytest.mark.parametrize("which", ["checkpoint", "record"])
def test_full_disk_says_no_space_and_keeps_the_previous_checkpoint(
    tmp_path: Path, fill_disk: Callable[..., _FillingDisk], which: str
) -> None:
    previous = save_checkpoint(_state(1.0), tmp_path / "epoch_1.pth", meta={"epoch": 1})
    numel = 1_000_000  # 4 MB of tensor data
    if which == "checkpoint":
        disk = fill_disk(budget=1_000_000, only="epoch_2.pth.tmp")  # fails partway through torch.save
    else:
        disk = fill_disk(budget=0, only="meta.json.tmp")  # the checkpoint fits, its record does not

    with pytest.raises(CheckpointError, match="no space left on device") as info:
        save_checkpoint(_state(2.0, numel=numel), tmp_path / "epoch_2.pth", meta={"epoch": 2})

    message = str(info.value)
    assert str(tmp_path / "epoch_2.pth") in message
    attempted = [int(n) for n in re.findall(r"\((\d+) bytes\)", message)]
    assert attempted and attempted[0] >= numel * 4
    assert re.search(r"about \d+\.\d (KiB|MiB)", message)
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno in (errno.ENOSPC, errno.EDQUOT)
    assert _debris(tmp_path) == []
    # Staged beside the target, never in the system temp dir (a move from there is a copy).
    assert disk.written and {p.parent for p in disk.written} == {tmp_path}
    assert not (tmp_path / "epoch_2.pth").exists()
    verify_checkpoint(previous)
    assert load_checkpoint(previous)["model"]["weight"][0] == 1.0


def test_full_disk_while_writing_the_pointer_keeps_the_old_pointer(
    tmp_path: Path, fill_disk: Callable[..., _FillingDisk]
) -> None:
    first = save_checkpoint(_state(), tmp_path / "epoch_1.pth")
    write_pointer(tmp_path, first)
    second = save_checkpoint(_state(), tmp_path / "epoch_2.pth")
    fill_disk(budget=0, only="last_checkpoint")

    with pytest.raises(CheckpointError, match=r"no space left on device .*last_checkpoint"):
        write_pointer(tmp_path, second)

    assert read_pointer(tmp_path) == first.absolute()
    assert _debris(tmp_path) == []


def test_rotation_with_one_kept_checkpoint_survives_a_failed_save(
    tmp_path: Path, fill_disk: Callable[..., _FillingDisk]
) -> None:
    def save_and_rotate(epoch: int) -> None:
        # The order CheckpointHook uses: save, then move the pointer, then delete old ones.
        path = save_checkpoint(_state(float(epoch)), tmp_path / f"epoch_{epoch}.pth", meta={"epoch": epoch})
        write_pointer(tmp_path, path)
        for old in list_checkpoints(tmp_path)[:-1]:
            remove_checkpoint(old)

    save_and_rotate(1)
    fill_disk(budget=1000)  # a few KiB are needed
    with pytest.raises(CheckpointError, match="no space"):
        save_and_rotate(2)

    pointer = read_pointer(tmp_path)
    assert pointer == (tmp_path / "epoch_1.pth").absolute()
    verify_checkpoint(pointer)
    assert list_checkpoints(tmp_path) == [tmp_path / "epoch_1.pth"]
    assert find_resumable(tmp_path) == pointer
    assert _debris(tmp_path) == []

    fill_disk(budget=10**9)  # space freed: the next save rotates the old one out
    save_and_rotate(3)
    assert list_checkpoints(tmp_path) == [tmp_path / "epoch_3.pth"]
    assert find_resumable(tmp_path) == (tmp_path / "epoch_3.pth").absolute()


# -- kill -9 in a real process ---------------------------------------------------------------

_SAVER = textwrap.dedent(
    """
    import sys, time, torch
    from pathlib import Path
    from pluginloop.checkpoint import list_checkpoints, remove_checkpoint, save_checkpoint, write_pointer

    directory, first = Path(sys.argv[1]), int(sys.argv[2])
    for step in range(first, first + 1000):
        # 10 x 20 MB: big enough that a save takes a while; every value is the step.
        state = {"model": {f"w{i}": torch.full((5_000_000,), float(step)) for i in range(10)}}
        print("saving", step, flush=True)
        start = time.monotonic()
        path = save_checkpoint(state, directory / f"iter_{step}.pth", meta={"step": step})
        write_pointer(directory, path)
        for old in list_checkpoints(directory)[:-2]:
            remove_checkpoint(old)
        print("saved", step, time.monotonic() - start, flush=True)
    """
)


def _read_until(child: subprocess.Popen[bytes], word: str, stderr: Path) -> list[str]:
    assert child.stdout is not None
    while line := child.stdout.readline().decode():
        if line.startswith(word):
            return line.split()
    pytest.fail(f"the saving process exited before printing {word!r}:\n{stderr.read_text()}")


@pytest.mark.slow
def test_kill_9_during_saves_never_leaves_a_torn_resumable_checkpoint(tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    directory.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    debris_seen = 0
    # Kill at the start of a save, in its middle and near its end (fractions of a save's time).
    for round_, fraction in enumerate([0.05, 0.5, 0.95]):
        stderr = tmp_path / f"stderr-{round_}.txt"
        with stderr.open("wb") as stderr_file:
            child = subprocess.Popen(
                [sys.executable, "-c", _SAVER, str(directory), str(100 * round_)],
                stdout=subprocess.PIPE,
                stderr=stderr_file,
                bufsize=0,  # unbuffered: readline reads only up to the line it returns
                env=env,
            )
        watchdog = threading.Timer(60, child.kill)  # a hung child fails the test, not CI
        watchdog.start()
        try:
            seconds = float(_read_until(child, "saved", stderr)[2])  # one complete save first
            _read_until(child, "saving", stderr)
            time.sleep(fraction * seconds)
            child.send_signal(signal.SIGKILL)
            assert child.wait() == -signal.SIGKILL, stderr.read_text()
        finally:
            watchdog.cancel()
            child.kill()
            child.wait()
            assert child.stdout is not None
            child.stdout.close()

        removed = remove_stale_temp_files(directory)
        print(f"kill at {fraction:.0%} of a save removed {[p.name for p in removed]}")
        debris_seen += bool(removed)
        assert _debris(directory) == []
        for path in list_checkpoints(directory):
            verify_checkpoint(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error", CheckpointWarning)  # nothing may look damaged
            resumable = find_resumable(directory)
        assert resumable is not None
        assert resumable == read_pointer(directory)
        state = load_checkpoint(resumable)
        step = verify_checkpoint(resumable)["step"]
        assert step >= 100 * round_
        for tensor in state["model"].values():
            assert torch.all(tensor == step)

    assert debris_seen, "no kill landed in the middle of a write; the test proved nothing"
    shutil.rmtree(directory)  # ~600 MB; pytest keeps the last runs' tmp_path around
