"""One atomic file writer for everything flowsolve puts on disk (stores, solvers, checkpoints).

A reader sees either the old file or the complete new one, never a partial write: the
content goes to a temporary file in the target's directory, is flushed and fsynced, and is
then renamed over the target. The temporary file is created with mode ``0o666`` so that the
kernel applies the process umask, as for any ordinary file (``tempfile.mkstemp`` would
force ``0o600`` whatever the umask).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Union

Content = Union[bytes, Callable[[BinaryIO], object]]


def atomic_write(path, content: Content) -> Path:
    """Write ``content`` to ``path`` atomically; returns the path.

    Args:
        path: the target file; its directory is created if missing.
        content: the bytes to write, or a function that writes to the binary stream it is
            given, e.g. ``lambda stream: torch.save(payload, stream)`` or
            ``lambda stream: stream.write(text.encode())``.

    Example:
        >>> import tempfile, os
        >>> target = atomic_write(os.path.join(tempfile.mkdtemp(), "hello.txt"), b"hello")
        >>> target.read_bytes()
        b'hello'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary, stream = _create_temporary(path)
    try:
        with stream:
            if isinstance(content, (bytes, bytearray, memoryview)):
                stream.write(content)
            else:
                content(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)
    return path


def _create_temporary(path: Path) -> tuple[Path, BinaryIO]:
    """A new hidden file next to ``path``, opened for writing with umask-honouring permissions."""
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return temporary, os.fdopen(handle, "wb")
    raise FileExistsError(f"could not create a temporary file next to {path}; remove stale .{path.name}.*.tmp files")


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; best effort (not every platform can open a directory)."""
    try:
        handle = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
