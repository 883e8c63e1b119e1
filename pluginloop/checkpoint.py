"""Safe checkpoint writes and verified loads: the only code that touches checkpoint files.

Every file is written to a temp file in the same directory, fsynced, renamed onto its
final name, and the directory fsynced, so a kill leaves either the old or the new file.
Each checkpoint ``x.pth`` has a record ``x.pth.meta.json`` holding its size and sha256;
loading verifies the file against the record before anything is unpickled, and then
unpickles with ``weights_only=True`` so that a checkpoint cannot run code.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import IO, Any, cast, final

import torch

from pluginloop.errors import CheckpointError

_FORMAT = 1
_RECORD_SUFFIX = ".meta.json"
_POINTER_NAME = "last_checkpoint"
_RESERVED = frozenset({"format", "file", "size", "sha256"})
_TEMP_NAME = re.compile(r"^\..+\.tmp-\d+$")
# EDQUOT (quota exceeded) is "disk full" for the user too; Windows has no EDQUOT.
_NO_SPACE = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped, or the pointer names a missing file."""


@final
class _HashingWriter:
    """Passes torch.save's writes to a file, hashing and counting them on the way.

    This saves reading a large checkpoint back. torch.save needs only ``write`` and
    ``flush``; with no ``seek`` it must write sequentially, so the hash is of the file.
    """

    __slots__ = ("_file", "error", "sha256", "size")

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.sha256 = hashlib.sha256()
        self.size = 0
        # torch.save turns a failed write into "unexpected pos N vs M"; keep the real error.
        self.error: OSError | None = None

    def write(self, data: bytes | memoryview) -> int:
        try:
            written = self._file.write(data)
        except OSError as exc:
            self.error = exc
            raise
        self.sha256.update(memoryview(data)[:written])
        self.size += written
        return written

    def flush(self) -> None:
        self._file.flush()


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + _RECORD_SUFFIX)


def _temp_path(path: Path) -> Path:
    # Same directory as the target: os.replace is then an atomic rename, never a copy
    # across filesystems (Lightning's /tmp staging lost the old checkpoint on a full disk).
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _sync(file: IO[bytes]) -> None:
    file.flush()
    os.fsync(file.fileno())


def _write_temp(tmp: Path, data: bytes) -> None:
    with open(tmp, "wb") as file:
        file.write(data)
        _sync(file)


def _commit(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    if os.name == "posix":  # fsync the directory to make the rename durable (not on Windows)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _human(size: int) -> str:
    power = min(4, max(0, size.bit_length() - 1) // 10)  # 1024**power <= size
    return f"{size / 1024**power:.1f} {('bytes', 'KiB', 'MiB', 'GiB', 'TiB')[power]}"


def _tensor_bytes(obj: object) -> int:
    """Roughly how big a state will be on disk (its tensors), for the disk-full message."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(value) for value in obj)
    return 0


def _write_error(path: Path, cause: BaseException, attempted: int, written: int) -> CheckpointError:
    if isinstance(cause, OSError) and cause.errno in _NO_SPACE:
        return CheckpointError(
            f"no space left on device while writing {path}: it needs about {_human(attempted)} "
            f"({attempted} bytes) and {written} bytes were written before the disk filled; "
            "free some space or write elsewhere (the previous checkpoint is untouched)",
            path,
        )
    return CheckpointError(f"cannot write {path}: {type(cause).__name__}: {cause}", path)


def save_checkpoint(
    state: dict[str, Any], path: str | os.PathLike[str], *, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``state`` to ``path`` atomically, with its record ``<path>.meta.json``; return the path.

    The record holds ``{"format": 1, "file", "size", "sha256", **meta}``. A kill at any
    moment leaves the old pair, the new pair, or (only when overwriting the same name) a
    pair that :func:`verify_checkpoint` reports as a mismatch. Any failure removes the temp
    files and raises :class:`CheckpointError`; a full disk says "no space left on device".
    """
    path = Path(path)
    meta = dict(meta or {})
    if clash := sorted(_RESERVED & meta.keys()):
        raise ValueError(f"meta must not set the record's own keys {clash}")
    json.dumps(meta)  # not JSON-serializable: fail before writing anything
    tmp, record_tmp = _temp_path(path), _temp_path(_record_path(path))
    sink: _HashingWriter | None = None
    try:
        with open(tmp, "wb") as file:
            sink = _HashingWriter(file)
            torch.save(state, cast(IO[bytes], sink))
            _sync(file)
        record = {"format": _FORMAT, "file": path.name, "size": sink.size, "sha256": sink.sha256.hexdigest()}
        _write_temp(record_tmp, json.dumps({**record, **meta}, indent=1).encode())
        # Both temps are complete before either rename, so a failure up to here leaves the
        # old pair untouched. The record goes last: for a new name it marks the checkpoint
        # complete (a file without a record is never listed or resumed from).
        _commit(tmp, path)
        _commit(record_tmp, _record_path(path))
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        record_tmp.unlink(missing_ok=True)
        if not isinstance(exc, Exception):  # KeyboardInterrupt and friends pass through
            raise
        cause = sink.error if sink is not None and sink.error is not None else exc
        written = sink.size if sink is not None else 0
        raise _write_error(path, cause, max(_tensor_bytes(state), written), written) from cause
    return path


def write_pointer(work_dir: str | os.PathLike[str], target: Path) -> None:
    """Atomically make ``<work_dir>/last_checkpoint`` hold the absolute path of ``target``.

    Call it only after :func:`save_checkpoint` returned, and delete old checkpoints only
    after it returned, so that the pointer never names a missing or partial file.
    """
    pointer = Path(work_dir) / _POINTER_NAME
    target = Path(target).absolute()
    if not target.is_file():
        raise CheckpointError(f"refusing to point {pointer} at {target}, which does not exist", target)
    data = f"{target}\n".encode()
    tmp = _temp_path(pointer)
    try:
        _write_temp(tmp, data)
        _commit(tmp, pointer)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise _write_error(pointer, exc, len(data), 0) from exc


def read_pointer(work_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint path in ``<work_dir>/last_checkpoint``, or None if there is none.

    A relative path (a hand-written pointer) is taken relative to ``work_dir``.
    """
    try:
        text = (Path(work_dir) / _POINTER_NAME).read_text().strip()
    except FileNotFoundError:
        return None
    return Path(work_dir) / text if text else None


def _damaged(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} {problem}", path)


def verify_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check ``path`` against its record (size, then sha256, reading the file once); return the record.

    Raises :class:`CheckpointError` naming the file and what is wrong: missing, empty,
    no record, truncated or resized, content altered.
    """
    path = Path(path)
    record_path = _record_path(path)
    if not path.is_file():
        raise _damaged(path, "is missing")
    size = path.stat().st_size
    if size == 0:
        raise _damaged(path, "is empty (0 bytes)")
    try:
        record = json.loads(record_path.read_text())
    except FileNotFoundError:
        # Not written by save_checkpoint (a foreign torch.save file), or a kill came
        # between its two renames: either way there is nothing to check it against.
        raise _damaged(
            path, f"has no record ({record_path.name}); to load it anyway, pass verify=False"
        ) from None
    except (OSError, ValueError) as exc:
        raise _damaged(path, f"has an unreadable record {record_path.name}: {exc}") from exc
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        raise _damaged(path, f"has a record {record_path.name} that is not format {_FORMAT}")
    recorded, sha256 = record.get("size"), record.get("sha256")
    if size != recorded:
        problem = "truncated" if isinstance(recorded, int) and size < recorded else "resized"
        raise _damaged(path, f"{problem}: {size} bytes on disk, {recorded} recorded")
    sha = hashlib.sha256()
    with open(path, "rb") as file:  # one streaming read: checkpoints can be larger than memory
        while chunk := file.read(1 << 20):
            sha.update(chunk)
    digest = sha.hexdigest()
    if digest != sha256:
        raise _damaged(path, f"content altered: sha256 {digest} on disk, {sha256} recorded")
    return record


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device | None = "cpu",
    *,
    verify: bool = True,
) -> dict[str, Any]:
    """Verify ``path`` (unless ``verify=False``), then load it with ``weights_only=True``.

    Nothing is unpickled before verification passes, and only tensors and plain values
    can be unpickled at all. Every failure is a :class:`CheckpointError` naming the file.
    """
    if verify:
        verify_checkpoint(path)
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise _damaged(path, f"cannot be loaded: {type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise _damaged(path, f"holds a {type(state).__name__}, not a dict")
    return state


def _order(checkpoint: Path) -> tuple[int, int, float]:
    try:
        record = json.loads(_record_path(checkpoint).read_text())
    except (OSError, ValueError):
        record = {}  # a damaged record still lists its file, so that resume reports it
    step, epoch = (record.get(key) if isinstance(record, dict) else None for key in ("step", "epoch"))
    return (
        step if isinstance(step, int) else -1,
        epoch if isinstance(epoch, int) else -1,
        checkpoint.stat().st_mtime,
    )


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """Checkpoints in ``directory`` that have a record, oldest first by step, epoch, then mtime."""
    found = []
    for record in Path(directory).glob("*" + _RECORD_SUFFIX):
        checkpoint = record.with_name(record.name[: -len(_RECORD_SUFFIX)])
        if checkpoint.is_file():
            found.append((_order(checkpoint), checkpoint))
    return [checkpoint for _, checkpoint in sorted(found)]


def find_resumable(
    directory: str | os.PathLike[str], work_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """The newest checkpoint in ``directory`` that verifies, or None.

    The pointer in ``work_dir`` (default: ``directory``) names the newest when it exists;
    otherwise the newest of :func:`list_checkpoints`. Each damaged checkpoint is skipped
    with a :class:`CheckpointWarning` naming it and the damage.
    """
    candidates = list_checkpoints(directory)[::-1]
    pointer_dir = Path(directory if work_dir is None else work_dir)
    pointer = read_pointer(pointer_dir)
    if pointer is not None and pointer.is_file():
        candidates = [pointer] + [c for c in candidates if c.resolve() != pointer.resolve()]
    elif pointer is not None:
        warnings.warn(
            f"{pointer_dir / _POINTER_NAME} names {pointer}, which does not exist; "
            f"looking for the newest verified checkpoint in {directory} instead",
            CheckpointWarning,
            stacklevel=2,
        )
    for candidate in candidates:
        try:
            verify_checkpoint(candidate)
        except CheckpointError as exc:
            warnings.warn(
                f"not resuming from damaged checkpoint {candidate}: {exc}; trying the previous one",
                CheckpointWarning,
                stacklevel=2,
            )
            continue
        return candidate
    return None


def remove_checkpoint(path: str | os.PathLike[str]) -> None:
    """Delete a checkpoint and its record; either may already be missing."""
    path = Path(path)
    # Record first: a kill in between leaves an unlisted file, never a record of nothing.
    _record_path(path).unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def remove_stale_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Delete temp files left in ``directory`` by killed saves; return what was removed.

    Call it at start, before any save into ``directory``: it removes every
    ``.<name>.tmp-<pid>`` file, whichever process wrote it.
    """
    removed = []
    for candidate in sorted(Path(directory).glob(".*.tmp-*")):
        if _TEMP_NAME.match(candidate.name) and candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed
