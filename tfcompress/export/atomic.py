"""Atomic writes: a failed export leaves nothing half-written at the target path."""

import contextlib
import os
import pathlib
import shutil
import tempfile


def check_writable_parent(path, argument="path"):
    """Raises a clear error unless ``path``'s folder exists and is writable."""
    parent = pathlib.Path(path).resolve().parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"{argument} must be in an existing folder; received: {argument}={str(path)!r} "
            f"(folder {str(parent)!r} does not exist)")
    if not os.access(parent, os.W_OK):
        raise PermissionError(
            f"{argument} must be in a writable folder; received: {argument}={str(path)!r} "
            f"(folder {str(parent)!r} is not writable)")


@contextlib.contextmanager
def atomic_output(path, directory=False):
    """Yields a temporary path beside ``path``; moves it into place only on success.

    Args:
        path: final file or folder path.
        directory: whether the output is a folder (a SavedModel) or a file.

    Yields:
        The temporary path to write to. On an exception it is deleted and the
        exception propagates; ``path`` is then untouched.
    """
    path = pathlib.Path(path)
    check_writable_parent(path)
    if directory:
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        shutil.rmtree(tmp)  # Writers such as model.export() want to create it.
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = pathlib.Path(name)
    try:
        yield tmp
        if directory:
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
