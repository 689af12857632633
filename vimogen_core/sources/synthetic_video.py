"""Synthetic-video source: prompt expansion -> text-to-video generation -> mesh recovery.

Each stage is a pluggable backend (e.g. an LLM that rewrites prompts, a diffusers video pipeline on
a GPU, a mesh-recovery model). Backends are named by environment variables as `module:factory`
(the factory is called with no arguments and returns the backend), so nothing heavy is imported
unless configured. With any stage missing the source yields nothing and `unavailable_reason`
says which stage and how to configure it.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

ENV_PROMPT_EXPANDER = "VIMOGEN_PROMPT_EXPANDER"
ENV_VIDEO_GENERATOR = "VIMOGEN_VIDEO_GENERATOR"
ENV_MESH_RECOVERY = "VIMOGEN_MESH_RECOVERY"


@runtime_checkable
class PromptExpander(Protocol):
    name: str

    def expand(self, prompt: str) -> str:
        """A short motion prompt -> a detailed video description."""


@runtime_checkable
class VideoGenerator(Protocol):
    name: str

    def generate(self, description: str) -> Any:
        """A description -> a video (frames array (N, H, W, 3) uint8 or a file path) with `.fps`."""


@runtime_checkable
class MeshRecovery(Protocol):
    name: str

    def recover(self, video: Any) -> dict[str, Any]:
        """A video -> per-frame SMPL output in camera coordinates: global_orient (T, 3),
        body_pose (T, 63), transl (T, 3), fps, and optionally focal_length, image_size."""


@dataclass(frozen=True)
class SyntheticCapture:
    """One generated sample: the prompts that made it and the mesh-recovery output of its video."""

    prompt: str
    description: str
    hmr_output: dict[str, Any]
    backends: str  # which expander / generator / recovery produced it


def load_backend(spec: str) -> Any:
    """`package.module:factory` -> factory()."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"backend spec {spec!r} must look like 'package.module:factory'")
    return getattr(importlib.import_module(module_name), attribute)()


@dataclass
class SyntheticVideoSource:
    expander: PromptExpander | None = None
    generator: VideoGenerator | None = None
    recovery: MeshRecovery | None = None

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> "SyntheticVideoSource":
        environ = os.environ if environ is None else environ
        specs = (environ.get(ENV_PROMPT_EXPANDER), environ.get(ENV_VIDEO_GENERATOR), environ.get(ENV_MESH_RECOVERY))
        return cls(*(load_backend(spec) if spec else None for spec in specs))

    @property
    def unavailable_reason(self) -> str | None:
        missing = [
            f"{stage} (set {variable}=package.module:factory)"
            for stage, backend, variable in (
                ("prompt expansion", self.expander, ENV_PROMPT_EXPANDER),
                ("video generation", self.generator, ENV_VIDEO_GENERATOR),
                ("mesh recovery", self.recovery, ENV_MESH_RECOVERY),
            )
            if backend is None
        ]
        if not missing:
            return None
        return "synthetic_video: no backend configured for " + ", ".join(missing) + "; producing no samples"

    def generate(self, prompts: Iterable[str]) -> Iterator[SyntheticCapture]:
        """Run the chain for each prompt; yields nothing when a stage is not configured."""
        if self.unavailable_reason is not None:
            return
        backends = f"{self.expander.name} -> {self.generator.name} -> {self.recovery.name}"
        for prompt in prompts:
            description = self.expander.expand(prompt)
            video = self.generator.generate(description)
            yield SyntheticCapture(prompt, description, self.recovery.recover(video), backends)
