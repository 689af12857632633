"""Prompt expansion for ViMoGen-light: new prompts for the teacher to perform.

The paper had an LLM expand frequent verbs into ~14K long-tail prompts. An expander here is any
object with a `name` and `expand(captions, count) -> prompts`; the offline default,
`CompositionalExpander`, needs no model: it reads the training captions into their parts - who
(subject), what (action), where to (direction), with what (body part) and how (manner) - and
composes new sentences from parts of different captions. Its output is a pure function of the
captions, the count and the seed, and never equals a training caption (compared case- and
punctuation-blind, mirrored captions included).
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from vimogen_core.curation.captions import mirror_caption


@runtime_checkable
class PromptExpander(Protocol):
    name: str

    def expand(self, captions: Sequence[str], count: int) -> list[str]:
        """Up to `count` new prompts, none of them one of `captions`."""
        ...


# The recognisers of each part; only the phrases that some caption uses are composed.
_SUBJECT = re.compile(r"^(?:a|an|the)?\s*(person|man|woman|someone|runner|fighter|acrobat|gymnast|dancer|boxer)\b\s*",
                      re.I)
DIRECTIONS = ("straight ahead", "forward", "ahead", "backwards", "backward", "sideways", "around", "in place",
              "on the spot", "in front of the body", "along the ground", "along the floor", "to the left",
              "to the right", "in a circle")
MANNERS = ("quickly", "slowly", "at a relaxed pace", "with a steady stride", "energetically", "gracefully", "calmly",
           "several times", "rhythmically", "smoothly", "gently")
_BODY_PART = re.compile(r"\b(?:with|on|using) (?:the |both |one |his |her |their )?"
                        r"(?:right |left )?(?:leg|legs|foot|feet|fists|fist|hands|hand|arms|arm|knees|knee)"
                        r"(?: and (?:knees|feet|hands))?(?=$|[,.;]| and )", re.I)
_OTHER_SUBJECTS = ("a person", "someone", "a man", "a woman")
_VERB = re.compile(r"^[a-z]+s\b")  # an action starts with a verb in the third person ("walks", not "lying")
_ARTICLES = {"a", "an", "the"}


def normalise(text: str) -> str:
    """Lower case, single spaces, no punctuation: how prompts are compared."""
    return " ".join(re.sub(r"[^\w\s-]", " ", text.lower()).split())


def _phrase_pattern(phrases: Sequence[str]) -> re.Pattern:
    return re.compile(r"\b(" + "|".join(sorted(map(re.escape, phrases), key=len, reverse=True)) + r")\b", re.I)


_DIRECTION = _phrase_pattern(DIRECTIONS)
_MANNER = _phrase_pattern(MANNERS)


@dataclass(frozen=True)
class CaptionParts:
    subjects: tuple[str, ...]
    actions: tuple[str, ...]
    directions: tuple[str, ...]
    body_parts: tuple[str, ...]
    manners: tuple[str, ...]


def caption_parts(captions: Sequence[str]) -> CaptionParts:
    """The parts the captions use. An action is what follows the subject, up to the first direction,
    body part, manner or clause break ("walks", "throws a front kick", "does a cartwheel")."""
    subjects, actions, directions, body_parts, manners = set(), set(), set(), set(), set()
    for caption in captions:
        text = " ".join(caption.strip().rstrip(".").split())
        match = _SUBJECT.match(text)
        if not match:
            continue
        subjects.add(text[: match.end()].strip().lower())
        rest = text[match.end():]
        directions.update(m.group(1).lower() for m in _DIRECTION.finditer(rest))
        manners.update(m.group(1).lower() for m in _MANNER.finditer(rest))
        # Each side's phrase also for the other side: training mirrors every motion.
        body_parts.update(p for m in _BODY_PART.finditer(rest) for p in (m.group(0).lower(), mirror_caption(m.group(0).lower())))
        cuts = [m.start() for pattern in (_DIRECTION, _MANNER, _BODY_PART) for m in [pattern.search(rest)] if m]
        cuts += [i for i in (rest.find(" and "),) if i >= 0]
        if 0 <= rest.find(",") and " " not in rest[: rest.find(",")]:  # "crouches, swings ..." but not "a slow, flowing"
            cuts.append(rest.find(","))
        action = rest[: min(cuts, default=len(rest))].strip().lower()
        if _VERB.match(action) and action.split()[-1] not in _ARTICLES:
            actions.add(action)
    return CaptionParts(*(tuple(sorted(s)) for s in (subjects | set(_OTHER_SUBJECTS), actions, directions, body_parts,
                                                      manners)))


@dataclass(frozen=True)
class CompositionalExpander:
    """Subject + action + up to two of (direction, body part, manner), from parts of different
    captions, in an order shuffled by `seed`."""

    seed: int = 0
    name: str = field(default="compositional (offline)", init=False)

    def expand(self, captions: Sequence[str], count: int) -> list[str]:
        if count < 0:
            raise ValueError(f"prompt count must be >= 0, got {count}")
        parts = caption_parts(captions)
        if not parts.actions:
            raise ValueError("no caption has the form '<subject> <action> ...'; nothing to compose from")
        seen = {normalise(c) for c in captions} | {normalise(mirror_caption(c)) for c in captions}
        modifiers = [("",) + parts.directions, ("",) + parts.body_parts, ("",) + parts.manners]
        combos = [(a, d, b, m) for a in parts.actions for d, b, m in itertools.product(*modifiers)
                  if sum(bool(x) for x in (d, b, m)) <= 2]
        order = np.random.default_rng(self.seed).permutation(len(combos))
        subjects = parts.subjects
        out: list[str] = []
        for rank, index in enumerate(order):
            if len(out) >= count:
                break
            action, direction, body, manner = combos[index]
            words = [subjects[rank % len(subjects)], action, direction, body, manner]
            prompt = " ".join(w for w in words if w) + "."
            key = normalise(prompt)
            if key not in seen:
                seen.add(key)
                out.append(prompt)
        return out


EXPANDERS = {"compositional": CompositionalExpander}


def get_expander(name: str = "compositional", **options) -> PromptExpander:
    try:
        return EXPANDERS[name](**options)
    except KeyError:
        raise ValueError(f"unknown prompt expander {name!r}; choose one of: {', '.join(EXPANDERS)}") from None


def training_captions() -> list[str]:
    """The built-in clips' captions (short and video-style), which expanded prompts must not repeat."""
    from vimogen_core.sources.captions import CLIP_CAPTIONS

    return [c for entry in CLIP_CAPTIONS.values() for c in [*entry["motion"], entry["video"]]]


@dataclass(frozen=True)
class PromptSettings:
    count: int = 2000
    expander: str = "compositional"
    seed: int = 0


def manifest_captions(manifest_path) -> list[str]:
    """Every caption of a curated shard set (short and video-style), the captions a student's
    training data already has."""
    from pathlib import Path

    from vimogen_core.curation.shard_reader import read_manifest

    table = read_manifest(Path(manifest_path), ["motion_text", "video_text"])
    captions = [c for texts in table["motion_text"].to_pylist() for c in texts or []]
    return captions + [c for c in table["video_text"].to_pylist() if c]


def expand_prompts(settings: PromptSettings = PromptSettings(), captions_from=None) -> tuple[list[str], int]:
    """(new prompts, how many captions they were composed from): the captions of the curated
    manifest `captions_from`, or the built-in clips' without one."""
    captions = manifest_captions(captions_from) if captions_from else training_captions()
    return get_expander(settings.expander, seed=settings.seed).expand(captions, settings.count), len(captions)
