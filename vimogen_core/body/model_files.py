"""Reading body-model files (SMPL / SMPL-H / SMPL-X) without running code from them.

`.npz` files are read with `allow_pickle=False`; entries that would need unpickling (SMPL-X
ships a few Python dicts such as `joint2num`) are left out, smplx does not use them.
`.pkl` files are read with a restricted unpickler that only rebuilds numpy arrays, numpy
scalars and scipy CSC/CSR matrices (the SMPL release stores `J_regressor` as a sparse
matrix); anything else, chumpy objects included, is refused with a MotionDataError.
"""
from __future__ import annotations

import codecs
import copyreg
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np

from vimogen_core.errors import MotionDataError
from vimogen_core.files import atomic_path

_ARRAY_RECONSTRUCT = np.array(0).__reduce__()[0]  # numpy's ndarray rebuild function, whatever its module
_SCALAR_RECONSTRUCT = np.float64(0).__reduce__()[0]


def _allowed_global(module: str, name: str):
    """The object a pickle may reference, or None when it is not allowed."""
    if module.startswith("numpy"):
        if name == "_reconstruct":
            return _ARRAY_RECONSTRUCT
        if name == "scalar":
            return _SCALAR_RECONSTRUCT
        if name == "ndarray":
            return np.ndarray
        if name == "dtype":
            return np.dtype
        return None
    if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix"):
        import scipy.sparse

        return getattr(scipy.sparse, name)
    if module == "_codecs" and name == "encode":
        # Protocol-2 pickles written by Python 3 carry array bytes as text plus this encode call.
        return codecs.encode
    if module in ("copyreg", "copy_reg") and name == "_reconstructor":
        # Rebuilds an object of a class that itself had to pass this check.
        return copyreg._reconstructor
    return None


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path: str):
        super().__init__(file, encoding="latin1")
        self._path = path

    def find_class(self, module: str, name: str):
        found = _allowed_global(module, name)
        if found is not None:
            return found
        if module.startswith("chumpy"):
            raise MotionDataError(self._path, "body model pickle holds chumpy objects; use the .npz release "
                                              "or a pickle re-saved with plain numpy arrays")
        raise MotionDataError(self._path, f"refused to unpickle {module}.{name}: only numpy arrays are allowed "
                                          "in a body model file")


def _plain_arrays(items: dict, path: str) -> dict[str, np.ndarray]:
    import scipy.sparse

    arrays: dict[str, np.ndarray] = {}
    for key, value in items.items():
        if scipy.sparse.issparse(value):
            value = value.toarray()
        if isinstance(value, (np.ndarray, np.generic, str, int, float)):
            arrays[str(key)] = np.asarray(value)
    if not arrays:
        raise MotionDataError(path, "no arrays in the body model file")
    return arrays


def load_model_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The numeric arrays of a body-model `.npz` or `.pkl` file, read without executing code."""
    path = Path(path)
    if not path.is_file():
        raise MotionDataError(path, "body model file not found")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                items = {}
                for key in data.files:
                    try:
                        items[key] = data[key]
                    except ValueError:  # an object array: would need unpickling
                        continue
        except (OSError, ValueError, EOFError) as err:
            raise MotionDataError(path, f"not a readable .npz body model ({err})") from None
        return _plain_arrays(items, str(path))
    if path.suffix == ".pkl":
        try:
            with open(path, "rb") as handle:
                loaded = _ArraysOnlyUnpickler(handle, str(path)).load()
        except MotionDataError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
            raise MotionDataError(path, f"not a readable body model pickle ({err})") from None
        if not isinstance(loaded, dict):
            raise MotionDataError(path, f"body model pickle holds a {type(loaded).__name__}, expected a dict of arrays")
        return _plain_arrays(loaded, str(path))
    raise MotionDataError(path, "body model files must be .npz or .pkl")


def content_hash(arrays: dict[str, np.ndarray]) -> str:
    """A short stable hash of a dict of arrays (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha1()
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{value.dtype.str}:{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to `path` so that concurrent readers never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a handle: numpy appends no ".npz"
        np.savez_compressed(handle, **arrays)
