"""Errors that name the offending input, so users can find and fix the file."""
from __future__ import annotations

import os
import re


class MotionDataError(ValueError):
    """Bad motion data: `str(err)` is "<path>: <reason>"."""

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)

    def __reduce__(self):  # crosses from a reader process intact (curation.batch_reader)
        return type(self), (self.path, self.reason)


# torch names the global a refused file asked for as "GLOBAL <module.name>" (not allowed or blocked).
_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+)")
_UNPICKLER_DETAIL = re.compile(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n|$)")


def pickled_objects_refused(path: str | os.PathLike, err: Exception) -> MotionDataError:
    """The error for a file that torch.load(weights_only=True) refused (pickle.UnpicklingError).
    torch's own message advises re-running with weights_only=False, which would run whatever code
    the file carries, so it is not passed on; only the global the file asked for, if named, is. A
    refusal that names no global (a damaged file, or a raw pickle) says what the unpickler met."""
    found = _REFUSED_GLOBAL.search(str(err))
    if found is None:
        detail = _UNPICKLER_DETAIL.search(str(err))
        return MotionDataError(path, "refused to load: not a torch file of only tensors and plain values "
                                     f"({detail.group(1) if detail else type(err).__name__})")
    return MotionDataError(path, "refused to load: reading it would need unpickling arbitrary Python objects, "
                                 f"which can run code from the file (it asks for {found.group(1)}); "
                                 "only tensors and plain values are read")
