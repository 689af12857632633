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


# Words that open a modifier after a caption's head clause ("walks forward | at a relaxed pace"):
# prepositions and conjunctions. Users often type only the head clause.
_MODIFIER_OPENERS = frozenset({
    "at", "with", "on", "in", "into", "onto", "along", "across", "around", "over", "to", "toward", "towards",
    "from", "while", "and", "then", "before", "after", "as", "like", "using", "through", "off", "for", "by",
})


def caption_short_forms(caption: str, min_words: int = 3) -> list[str]:
    """Shorter captions of the same motion: the caption cut before each modifier it opens (a
    preposition or conjunction) and at each comma, at least `min_words` words long, without final
    punctuation. "a person walks forward at a relaxed pace." -> ["a person walks forward"]. A form
    ending in an -ing word is left out: its head is a participle ("a person lying"), not an action."""
    words = caption.strip().rstrip(".!?;").split()
    forms = []
    for end in range(min_words, len(words)):
        if words[end].lower() in _MODIFIER_OPENERS or words[end - 1].endswith(","):
            form = " ".join(words[:end]).rstrip(",;:")
            if form not in forms and not form.lower().endswith("ing"):
                forms.append(form)
    return forms
