"""Files that survive a kill: atomic writes, checks of saved models, a run-directory lock.

Every file the package and its programs write (checkpoints, histories, configs, backups,
reports, classifiers) goes through :func:`atomic_path` or one of its wrappers: the
content is written to a hidden temporary name in the destination's own directory and
renamed over the destination (``os.replace``, atomic on POSIX file systems).  A kill, a
full disk or an exception while writing leaves the previous file as it was and no
partial file under the real name; the temporary is removed on an exception (a SIGKILL
leaves it, hidden, and the next successful write of the same file removes it).

Created files and directories get the user's usual permissions (``0o666`` / ``0o777``
less the umask), not the ``0o600`` / ``0o700`` of :mod:`tempfile`.

:func:`keras_file_problem` and :func:`weights_file_problem` say why a ``.keras`` archive
or a ``.weights.h5`` file cannot be loaded (truncated, not a zip/HDF5 file, a damaged
member), or ``None``; Keras itself reports any unreadable ``.keras`` file as
"File not found".

:class:`RunDirLock` is an exclusive ``flock`` on a hidden file beside a run directory:
a second training into the same directory fails at once with a message naming the
holder.  The lock dies with its process, so a killed run never leaves a stale lock.
:func:`waiting_lock` is the blocking kind, for work that a second process should wait
for rather than repeat (preparing a TFDS data set in a shared ``data_dir``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import socket
import time
import uuid
import zipfile

__all__ = ["RunDirInUseError", "RunDirLock", "TMP_PREFIX", "atomic_path", "check_writable_dir",
           "keras_file_problem", "save_model_atomic", "save_weights_atomic", "waiting_lock",
           "weights_file_problem", "write_bytes_atomic", "write_json_atomic"]

#: Prefix of the temporary names of atomic writes (hidden files in the destination's
#: directory).
TMP_PREFIX = ".tmp-"


def _umask() -> int:
    # os.umask can only be read by setting it; restore at once (single-threaded callers).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give a new file."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode ``os.makedirs`` would give a new directory."""
    return 0o777 & ~_umask()


def _tmp_name(path: str) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    # Keep the final suffix(es): Keras chooses the format by ".keras" / ".weights.h5".
    suffix = ".weights.h5" if name.endswith(".weights.h5") else os.path.splitext(name)[1]
    return os.path.join(folder, f"{TMP_PREFIX}{name}.{uuid.uuid4().hex[:12]}{suffix}")


def _remove_stale(path: str) -> None:
    """Removes temporaries of earlier, killed writes of ``path``."""
    folder, name = os.path.split(os.path.abspath(path))
    for stale in glob.glob(os.path.join(glob.escape(folder), f"{TMP_PREFIX}{glob.escape(name)}.*")):
        with contextlib.suppress(OSError):
            os.remove(stale)


@contextlib.contextmanager
def atomic_path(path, fsync: bool = True):
    """Yields a temporary path beside ``path``; when the block exits normally the
    temporary is renamed over ``path``, on an exception it is removed and ``path`` is
    left as it was.  The caller writes the temporary by any means (``model.save``,
    ``open``, ``tf.io.write_file``)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = _tmp_name(path)
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise FileNotFoundError(f"Nothing was written to the temporary {tmp!r} of {path!r}.")
        if os.path.isfile(tmp):
            os.chmod(tmp, file_mode())
            if fsync:
                fd = os.open(tmp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.lexists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise
    _remove_stale(path)
    if fsync:
        with contextlib.suppress(OSError):
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def write_bytes_atomic(path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_json_atomic(path, data, **dump_kwargs) -> None:
    """``data`` as indented, key-sorted JSON (plus a newline) to ``path``, atomically.
    The text is made before anything touches the disk, so data that JSON cannot hold
    raises without a write."""
    dump_kwargs = {"indent": 2, "sort_keys": True, **dump_kwargs}
    text = json.dumps(data, **dump_kwargs) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def save_model_atomic(model, path) -> None:
    """``model.save(path)`` (a ``.keras`` archive) through a temporary name."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def save_weights_atomic(model, path) -> None:
    """``model.save_weights(path)`` (``.weights.h5``) through a temporary name."""
    with atomic_path(path) as tmp:
        model.save_weights(tmp)


# --------------------------------------------------------------------------------------
# Checks of saved files


def keras_file_problem(path) -> str | None:
    """Why the ``.keras`` archive ``path`` cannot be loaded, or None if it looks whole
    (a zip archive whose members pass their CRC checks and that holds the model's
    ``config.json``)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return "it does not exist"
    if not os.path.isfile(path):
        return "it is not a file"
    size = os.path.getsize(path)
    if not zipfile.is_zipfile(path):
        return (f"it is not a .keras (zip) archive ({size} bytes; truncated by an "
                "interrupted write, or another kind of file)")
    try:
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                return "the archive has no config.json (not a Keras model file)"
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        return f"the archive is damaged ({type(e).__name__}: {e})"
    if bad is not None:
        return f"the archive member {bad!r} is damaged (CRC mismatch)"
    return None


def weights_file_problem(path) -> str | None:
    """Why the ``.weights.h5`` file ``path`` cannot be loaded, or None (every dataset
    of the HDF5 file reads back)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return "it does not exist"
    try:
        import h5py
    except ImportError:  # pragma: no cover - h5py ships with Keras
        return None
    try:
        with h5py.File(path, "r") as f:
            def read(name, obj):
                if isinstance(obj, h5py.Dataset):
                    obj[()]
            f.visititems(read)
    except Exception as e:  # h5py raises OSError, KeyError, RuntimeError ...
        return (f"it is not a readable HDF5 weights file ({os.path.getsize(path)} bytes; "
                f"{type(e).__name__}: {e})")
    return None


def check_writable_dir(path, name: str) -> None:
    """Raises ValueError unless ``path`` is, or can be created as, a directory this
    process can write (checked without creating anything): no component of it is a
    regular file and its nearest existing ancestor is writable."""
    path = os.fspath(path)
    if path == "":
        raise ValueError(f"{name} must be a directory path. Received: {name}=''.")
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    if not os.path.isdir(current):
        raise ValueError(
            f"{name} cannot be created: {current!r} is a file, not a directory. "
            f"Received: {name}={path!r}.")
    if not os.access(current, os.W_OK | os.X_OK):
        what = "is not writable" if current == os.path.abspath(path) else \
            f"cannot be created: {current!r} is not writable"
        raise ValueError(f"{name} {what}. Received: {name}={path!r}.")


# --------------------------------------------------------------------------------------
# The run-directory lock


@contextlib.contextmanager
def waiting_lock(path):
    """Holds an exclusive ``flock`` on the file ``path``, waiting for any other holder.

    For work that must not run twice at once and that a second process can reuse once
    the first has finished: two trainings started together on a fresh machine would
    otherwise both prepare the same TFDS data set and the slower one would fail to
    rename its finished copy over the faster one's.  The file is created if needed and
    left in place (removing it would let a waiter and a newcomer lock different files);
    the kernel releases the lock when the process ends, however it ends.
    """
    fd = os.open(os.fspath(path), os.O_RDWR | os.O_CREAT, file_mode())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


class RunDirInUseError(ValueError):
    """Another process holds the lock of a run directory."""


class RunDirLock:
    """Exclusive lock on the run directory ``run_dir`` for one training process.

    The lock is a ``flock`` on ``<parent>/.<name>.lock`` (beside the run directory, so
    that an empty or absent run directory stays empty): the kernel releases it when the
    process ends, however it ends, so a killed run leaves no stale lock.  The file holds
    the holder's pid, host and start time for the message a second process gets.  On
    release the file is removed; an acquirer checks that the file it locked is still the
    one at the path, so removal cannot let two processes hold the lock.
    """

    def __init__(self, run_dir):
        run_dir = os.path.abspath(os.fspath(run_dir))
        self.run_dir = run_dir
        parent, name = os.path.split(run_dir.rstrip(os.sep) or os.sep)
        self.path = os.path.join(parent, f".{name}.lock")
        self._fd = None
        self._made_parent = None

    def acquire(self) -> "RunDirLock":
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            check_writable_dir(parent, "run_dir's parent")
            missing = parent
            while not os.path.exists(os.path.dirname(missing)):
                missing = os.path.dirname(missing)
            os.makedirs(parent, exist_ok=True)
            self._made_parent = missing
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = self._holder(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    self._cleanup_parent()
                    raise RunDirInUseError(
                        f"run_dir {self.run_dir!r} is in use by another training "
                        f"({holder}; lock file {self.path!r}). Wait for it to finish, or "
                        "choose another --run-dir.") from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # removed by a releasing holder after we opened it: retry
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
            self._fd = fd
            return self
        raise RuntimeError(f"Could not lock {self.path!r}.")  # pragma: no cover

    @staticmethod
    def _holder(fd) -> str:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            info = json.loads(os.read(fd, 4096).decode() or "{}")
            return (f"pid {info.get('pid')} on {info.get('host')}, since "
                    f"{info.get('since')}")
        except (OSError, ValueError):
            return "a process that has not yet written its pid"

    def _cleanup_parent(self):
        if self._made_parent is not None:
            # Remove the directories this lock created, if nothing else went into them.
            current = os.path.dirname(self.path)
            while True:
                try:
                    os.rmdir(current)
                except OSError:
                    break
                if current == self._made_parent:
                    break
                current = os.path.dirname(current)
            self._made_parent = None

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self.path)
        os.close(self._fd)  # closing releases the flock
        self._fd = None
        self._cleanup_parent()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
