"""Reading ``.npz`` files so that every failure is one error naming the file and field.

Shared by the model file (:mod:`shiftpool.sw.model.file`) and the float model file
(:mod:`shiftpool.sw.train.nn`).
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["json_header", "open_npz"]

#: The first bytes of a ZIP archive: a local file header, or the end record of an
#: empty archive.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

#: What a broken archive raises (NotImplementedError and RuntimeError: a member
#: whose compression method is unknown or unavailable).
_CORRUPT = (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError,
            RuntimeError)


def open_npz(path: Path, error: type[Exception], what: str, kind: str | None = None
             ) -> tuple[np.lib.npyio.NpzFile, Callable[[str], np.ndarray]]:
    """Open ``path`` as an ``.npz`` of ``what`` (e.g. "float model file"); ``kind``
    names the format where it is not ``what`` (e.g. "shiftpool model file").

    Returns the open archive (use it as a context manager) and ``member(name)``, which
    reads one array. Every failure, now or in ``member``, raises ``error`` with a
    message naming the file and, where there is one, the field.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc}") from None
    not_ours = f"{path}: not a {kind or what} (.npz)"
    if raw.startswith(b"\x93NUMPY"):
        raise error(f"{not_ours}: it holds a single array (.npy)")
    if not raw.startswith(_ZIP_MAGIC):
        raise error(f"{not_ours}: it does not start with a ZIP signature (an .npz is a "
                    f"ZIP archive)")
    # Parse from memory: np.load on a path leaks the open file when the zip is broken.
    try:
        npz = np.load(io.BytesIO(raw), allow_pickle=False)
    except _CORRUPT as exc:
        raise error(f"{not_ours}, truncated or corrupt: {exc}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise error(f"{not_ours}: it holds a single array")

    def member(name: str) -> np.ndarray:
        try:
            return npz[name]
        except (*_CORRUPT, zlib.error) as exc:
            raise error(f"{path}: field {name!r} cannot be read (truncated or corrupt "
                        f"file): {exc}") from None

    return npz, member


def json_header(npz, member: Callable[[str], np.ndarray], path: Path,
                error: type[Exception]):
    """The JSON value of an archive's ``header`` member (from :func:`open_npz`);
    ``error`` naming the field if it is missing or not JSON."""
    if "header" not in npz.files:
        raise error(f"{path}: field 'header' is missing")
    try:
        return json.loads(bytes(member("header")).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: field 'header' is not JSON: {exc}") from None
