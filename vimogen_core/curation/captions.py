"""Caption handling for curation: mirrored captions swap the words that name a side or a turning sense."""
from __future__ import annotations

import re

# Mirroring x -> -x swaps the body's sides and reverses every turn, so both kinds of word swap.
_MIRROR_TABLE = {
    "left": "right", "right": "left",
    "leftward": "rightward", "rightward": "leftward",
    "leftwards": "rightwards", "rightwards": "leftwards",
    "clockwise": "counterclockwise", "counterclockwise": "clockwise",
    "counter-clockwise": "clockwise", "anticlockwise": "clockwise", "anti-clockwise": "clockwise",
}
# Longest first so "counter-clockwise" wins over "clockwise".
_MIRROR_PATTERN = re.compile(
    r"(?<!\w)(" + "|".join(sorted(map(re.escape, _MIRROR_TABLE), key=len, reverse=True)) + r")(?!\w)",
    re.IGNORECASE,
)


def _match_case(replacement: str, original: str) -> str:
    if original.isupper():
        return replacement.upper()
    if original[0].isupper():
        return replacement[0].upper() + replacement[1:]
    return replacement


def mirror_caption(caption: str) -> str:
    """The caption of the mirrored motion: left <-> right, clockwise <-> counterclockwise, case kept."""
    return _MIRROR_PATTERN.sub(lambda m: _match_case(_MIRROR_TABLE[m.group(0).lower()], m.group(0)), caption)


def clean_captions(captions) -> tuple[str, ...]:
    """Strip whitespace and drop empty entries; a sample whose list comes back empty fails the caption gate."""
    if captions is None:
        return ()
    if isinstance(captions, str):
        captions = [captions]
    return tuple(c.strip() for c in captions if isinstance(c, str) and c.strip())
