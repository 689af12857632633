"""The training loop: flow matching on the gated two-branch DiT, single process or torchrun (DDP, or
FSDP2 for sizes that do not fit one device: train/fsdp.py), on the CPU or a GPU.

Exactness: the data of step k is a pure function of (seed, k) (see `data.py`), the learning rate
and EMA decay are functions of k, and a checkpoint holds the model, EMA, optimizer and RNG states;
so stopping after any checkpoint and resuming gives the same weights as running straight through.
Under torchrun every rank takes a slice of the same global batch, and the loss of each rank is
weighted by its share of the valid frames, so the averaged gradient equals the single-process one.

On a GPU: nccl between processes, bf16 autocast where the device runs bf16 natively (and bf16
parameter gathers under FSDP), fused AdamW, optionally torch.compile; the attention kernel that
runs for the network's key-padding masks is read off the profiler and logged (hardware.sdpa_backend).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from vimogen_core.errors import MotionDataError
from vimogen_core.hardware import bf16_is_fast, resolve_device, sdpa_backend
from vimogen_core.motion.representation import JOINT_POS
from vimogen_core.sinks import MetricSink, NullSink
from vimogen_core.train import checkpoint as ckpt
from vimogen_core.train import fsdp
from vimogen_core.train.conditioning import TextContext
from vimogen_core.train.config import TrainConfig
from vimogen_core.train.batches import TrainBatch, batch_loader
from vimogen_core.train.data import MotionDataset, build_dataset
from vimogen_core.train.geometry_loss import JointGeometryLoss

KEEP_CHECKPOINTS = 3
PARALLEL_MODES = ("ddp", "fsdp")
# objective(model, batch, s (B,), noise (B, T, 276), context (B, L, D), context_mask (B, L)) -> loss
Objective = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    step: int
    final_loss: float  # mean loss over the last `log_every` steps
    wall_s: float
    samples_per_s: float
    attention_backend: str = ""  # the SDPA kernel that ran the network's masked attention


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str, need_group: bool = False) -> DistEnv:
    """One process, or a torchrun rank (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA. `device` may be
    "auto". need_group: a one-process run gets a process group of its own too (FSDP needs one)."""
    resolved = resolve_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    on_cuda = resolved.type == "cuda"
    if world_size == 1:
        if on_cuda and resolved.index is None:  # "cuda" / "auto": the current GPU, by number
            resolved = torch.device("cuda", torch.cuda.current_device())
        if need_group and not dist.is_initialized():
            dist.init_process_group("nccl" if on_cuda else "gloo", store=dist.HashStore(), rank=0, world_size=1,
                                    device_id=resolved if on_cuda else None)
        if on_cuda:
            torch.cuda.set_device(resolved)
        return DistEnv(0, 1, resolved)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if on_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on_cuda else "gloo")
    return DistEnv(dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local_rank}") if on_cuda else torch.device("cpu"))


def build_model_config(config: TrainConfig):
    from vimogen_core.model.config import get_preset

    base = get_preset(config.model_preset)
    try:
        return dataclasses.replace(base, **config.model_overrides)
    except TypeError as err:
        raise ValueError(f"bad model override in {config.model_overrides}: {err}") from None


def build_flow(config: TrainConfig, model_config):
    """The training objective (model/flow.py FlowMatching): the preset's flow-time shift, the
    network's prediction."""
    from vimogen_core.model.flow import FlowMatching

    return FlowMatching(shift=config.time_shift, prediction=model_config.prediction)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over `warmup_steps`, then constant or cosine decay to lr_min_ratio * lr."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    if config.lr_schedule != "cosine":
        raise ValueError(f"unknown lr_schedule {config.lr_schedule!r} (constant, cosine)")
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    floor = config.lr_min_ratio
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def ema_decay(config: TrainConfig, step: int) -> float:
    """The configured decay, ramped up at the start (config.ema_ramp) so early EMA weights are not
    stuck at init."""
    if not config.ema_ramp:
        return config.ema_decay
    return min(config.ema_decay, (1 + step) / (10 + step))


def time_and_noise(batch: TrainBatch, flow, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample flow time s (B,) and noise (B, T, 276), each from the sample's own generator,
    so they do not depend on how the global batch was split over processes. A sample with paired
    noise (a teacher's, for distillation) keeps it."""
    b, t, d = batch.x0.shape
    times = torch.zeros(b)
    noise = torch.zeros(b, t, d)
    lengths = batch.x_mask.sum(1).long().tolist()
    for i, (seed, n) in enumerate(zip(batch.time_seeds, lengths)):
        generator = torch.Generator().manual_seed(seed)
        times[i] = flow.sample_time(1, generator).reshape(())
        # At the sample's own length: CPU randn fills its last block differently for other sizes,
        # so drawing at the padded batch length would tie the noise to the batch composition.
        noise[i, :n] = torch.randn(n, d, generator=generator)
    noise = noise.to(device)
    if batch.paired is not None:
        noise = torch.where(batch.paired[:, None, None], batch.noise, noise)
    return times.to(device), noise


def flow_matching_loss(model: torch.nn.Module, flow, batch: TrainBatch, s: torch.Tensor, noise: torch.Tensor,
                       context: torch.Tensor, context_mask: torch.Tensor, use_bf16: bool,
                       geometry: JointGeometryLoss | None = None, geometry_weight: float = 0.0) -> torch.Tensor:
    """This process's loss of one batch (the forward pass of a training step; the throughput
    benchmark times the same function): the flow-matching loss on the noisy motion at times `s`,
    plus the weighted joint-geometry losses of the denoised estimate."""
    x_t = flow.interpolate(batch.x0, noise, s)  # (B, T, 276)
    with torch.autocast(batch.x0.device.type, dtype=torch.bfloat16, enabled=use_bf16):
        pred = model(x_t, flow.timestep_for_model(s), context, batch.x_mask, batch.reference, batch.reference_mask,
                     batch.use_text, context_mask)  # (B, T, 276)
    loss = flow.loss(pred.float(), batch.x0, noise, s, batch.x_mask, batch.loss_dims)
    if geometry is not None:
        global_rows = None if batch.loss_dims is None else batch.loss_dims[:, JOINT_POS.start]  # (B,)
        loss = loss + geometry_weight * geometry(flow.denoised(pred.float(), x_t, s), batch.x0, batch.x_mask,
                                                 global_rows).total()
    return loss


def _model_state(model: torch.nn.Module) -> dict:
    return (model.module if hasattr(model, "module") else model).state_dict()


class EMA:
    """fp32 exponential moving average of the parameters (buffers are copied)."""

    def __init__(self, model: torch.nn.Module):
        self.names = [name for name, _ in model.named_parameters()]
        self.shadow = {name: p.detach().float().clone() for name, p in model.named_parameters()}
        self.buffers = {name: b.detach().clone() for name, b in model.named_buffers()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module, decay: float) -> None:
        params = dict(model.named_parameters())
        torch._foreach_lerp_([self.shadow[n] for n in self.names], [params[n].detach().float() for n in self.names],
                             1.0 - decay)

    def state_dict(self) -> dict:
        return {**self.shadow, **self.buffers}

    def load_state_dict(self, state: dict) -> None:
        for name in self.shadow:
            self.shadow[name].copy_(state[name])
        for name in self.buffers:
            self.buffers[name].copy_(state[name])


def _check_resume_compatible(path: Path, payload: dict, config: TrainConfig, model_config, encoder_name: str) -> None:
    saved_model = json.loads(payload["model_config"])
    current_model = json.loads(json.dumps(dataclasses.asdict(model_config), sort_keys=True))
    if saved_model != current_model:
        diff = sorted(k for k in set(saved_model) | set(current_model) if saved_model.get(k) != current_model.get(k))
        raise MotionDataError(path, f"checkpoint is for model preset {payload['model_preset']!r}, this run uses "
                                    f"{config.model_preset!r} (differs in {', '.join(diff)})")
    if payload["text_encoder"] != encoder_name:
        raise MotionDataError(path, f"checkpoint was trained with text encoder {payload['text_encoder']!r}, "
                                    f"this run uses {encoder_name!r}")


def resolve_resume(resume: str | os.PathLike | None, out_dir: Path, sharded: bool = False) -> Path | None:
    """None: fresh run; "auto": the latest checkpoint in out_dir if any (sharded: the latest
    `.dcp` folder, which an FSDP run resumes from); else a checkpoint file or folder."""
    if resume is None:
        return None
    if str(resume) == "auto":
        return ckpt.latest_checkpoint(out_dir / "checkpoints", sharded=sharded)
    path = Path(resume)
    if sharded != path.is_dir() and path.exists():
        raise MotionDataError(path, "an FSDP run resumes from a sharded checkpoint folder (step_N.dcp), a DDP or "
                                    "one-process run from a .pt file" if sharded else
                                    "a sharded checkpoint folder resumes only with parallel=fsdp")
    return path


def _load_payload(path: Path, sharded: bool) -> dict:
    return ckpt.load_checkpoint(path / fsdp.META_NAME if sharded else path)


def train(config: TrainConfig, out_dir: str | os.PathLike, sink: MetricSink = NullSink(),
          resume: str | os.PathLike | None = None, progress: bool = True, dataset: MotionDataset | None = None,
          initial_state: dict | None = None, objective: Objective | None = None) -> TrainResult:
    """Train `config` into `out_dir`. A distillation run passes its own `dataset` (default: the one
    `config.data` names), the weights a fresh run starts from (`initial_state`: a student starts as
    its teacher) and an `objective` in place of the flow-matching loss."""
    from tqdm import tqdm

    from vimogen_core.model.dit import ViMoGenDiT

    out_dir = Path(out_dir)
    checkpoint_dir = out_dir / "checkpoints"
    if config.parallel not in PARALLEL_MODES:
        raise ValueError(f"unknown parallel {config.parallel!r} ({', '.join(PARALLEL_MODES)})")
    sharded = config.parallel == "fsdp"
    # A one-process FSDP run makes a process group of its own, and removes it when done.
    created_group = sharded and not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) == 1
    model_config = build_model_config(config)
    resume_path = resolve_resume(resume, out_dir, sharded)
    payload = _load_payload(resume_path, sharded) if resume_path is not None else None
    env = init_distributed(config.device, need_group=sharded)
    # bf16 where the hardware runs it natively; emulated bf16 is slower than fp32.
    use_bf16 = config.bf16 and bf16_is_fast(env.device)

    torch.manual_seed(config.seed)  # identical initial weights on every rank
    model = ViMoGenDiT(model_config).to(env.device)
    if initial_state is not None and payload is None:
        model.load_state_dict(initial_state)
    if payload is not None:
        _check_resume_compatible(resume_path, payload, config, model_config, config.text_encoder)
        if not sharded:
            ckpt.check_state_dict(resume_path, config.model_preset, model, payload["model"])
            model.load_state_dict(payload["model"])
    if config.activation_checkpointing:
        fsdp.checkpoint_activations(model)
    if config.compile:  # in place, block by block under FSDP: parameter names stay as they are
        for module in fsdp.transformer_blocks(model) if sharded else [model]:
            module.compile()
    if sharded:
        fsdp.shard_model(model, bf16=use_bf16)
    ema = EMA(model)
    # Fused on a GPU; for sharded (DTensor) parameters on the CPU torch would fall back to the
    # per-tensor loop, so ask for the multi-tensor one.
    on_cuda = env.device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=config.adam_betas,
                                  weight_decay=config.weight_decay, fused=on_cuda or None,
                                  foreach=True if sharded and not on_cuda else None)
    flow = build_flow(config, model_config)
    text = TextContext(config.text_encoder, config.text_len, out_dir / "text_cache" if env.is_main else None)
    if dataset is None:
        dataset = build_dataset(config, ckpt.checkpoint_normalizer(payload) if payload else None)
    geometry = JointGeometryLoss(dataset.normalizer) if config.geometry_weight > 0 else None

    start_step = 0
    if payload is not None:
        if sharded:
            fsdp.load_sharded(resume_path, model, optimizer, ema.shadow)
            ema.load_state_dict({**ema.shadow, **payload["ema"]})  # buffers are in meta.pt's ema
        else:
            ema.load_state_dict(payload["ema"])
            optimizer.load_state_dict(payload["optimizer"])
        ckpt.set_rng_state(payload["rng"])
        start_step = int(payload["step"])
        sink.log_text(f"resumed from {resume_path} at step {start_step}")

    train_model = model
    if env.world_size > 1 and not sharded:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    attention = sdpa_backend(env.device, torch.bfloat16 if use_bf16 else torch.float32, model_config.num_heads,
                             model_config.head_dim)
    if env.is_main:
        n_params = sum(p.numel() for p in model.parameters())
        sink.log_text(f"training {config.model_preset} ({n_params / 1e6:.2f} M parameters) on {len(dataset)} motions, "
                      f"{env.world_size} process(es) ({config.parallel if sharded or env.world_size > 1 else 'single'}) "
                      f"on {env.device}, global batch {config.batch_size}, bf16={use_bf16}"
                      + ("" if use_bf16 == config.bf16 else " (no native bf16 on this device)")
                      + f", attention kernel {attention}, {config.data_workers} loader worker(s)")

    def save_full(step: int) -> Path:
        """A `.pt` checkpoint (under FSDP gathered from the shards: a collective call)."""
        path = checkpoint_dir / ckpt.checkpoint_name(step)
        if sharded:
            model_state, optimizer_state = fsdp.full_model_and_optimizer(model, optimizer)
            ema_state = fsdp.full_tensors(ema.state_dict())
        else:
            model_state, optimizer_state, ema_state = _model_state(model), optimizer.state_dict(), ema.state_dict()
        if env.is_main:
            ckpt.save_checkpoint(path, step=step, train_config=config, model_config=model_config,
                                 text_encoder=config.text_encoder, normalizer=dataset.normalizer,
                                 model_state=model_state, ema_state=ema_state, optimizer_state=optimizer_state)
            ckpt.prune_checkpoints(checkpoint_dir, KEEP_CHECKPOINTS)
            getattr(sink, "log_artifact", lambda _: None)(path)
        return path

    def save(step: int, final: bool) -> Path:
        if not sharded:
            return save_full(step)
        path = checkpoint_dir / ckpt.sharded_checkpoint_name(step)
        fsdp.save_sharded(path, model, optimizer, ema.shadow, lambda meta: ckpt.save_checkpoint(
            meta, step=step, train_config=config, model_config=model_config, text_encoder=config.text_encoder,
            normalizer=dataset.normalizer, model_state={}, ema_state=ema.buffers, optimizer_state=None))
        if env.is_main:
            ckpt.prune_checkpoints(checkpoint_dir, KEEP_CHECKPOINTS)
        # The run's result is also one ordinary .pt, which generation and the benchmark read.
        return save_full(step) if final else path

    batches = batch_loader(dataset, config, start_step, config.steps, env.rank, env.world_size,
                           pin_memory=config.pin_memory and env.device.type == "cuda")
    recent_losses: list[float] = []
    started = time.perf_counter()
    path, saved_step = None, None
    bar = tqdm(total=config.steps, initial=start_step, disable=not (progress and env.is_main), desc="train",
               dynamic_ncols=True)
    for step in range(start_step, config.steps):
        lr = learning_rate(config, step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = next(batches).to(env.device)  # batch_loader yields exactly steps start..end-1
        s, noise = time_and_noise(batch, flow, env.device)
        context, context_mask = text.encode(batch.captions, batch.drop_text)  # (B, L, D), (B, L)
        context, context_mask = context.to(env.device), context_mask.to(env.device)
        if objective is not None:  # a distillation objective (vimogen_core.distill) scores the batch itself
            local_loss = objective(train_model, batch, s, noise, context, context_mask)
        else:
            local_loss = flow_matching_loss(train_model, flow, batch, s, noise, context, context_mask, use_bf16,
                                            geometry, config.geometry_weight)
        # The loss averages over valid frames x supervised dims; weighting each rank by its share of
        # the global count makes DDP's gradient average equal the single-process gradient.
        valid = batch.supervised_entries()
        if env.world_size > 1:
            total_valid = valid.detach().clone()
            dist.all_reduce(total_valid)
            share = valid / total_valid
            loss = local_loss * share * env.world_size
        else:
            share = torch.ones(())
            loss = local_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        ema.update(model, ema_decay(config, step))

        global_loss = (local_loss.detach() * share).reshape(1)
        if env.world_size > 1:
            dist.all_reduce(global_loss)
        recent_losses = (recent_losses + [float(global_loss)])[-config.log_every:]
        done = step + 1
        bar.update(1)
        if env.is_main and (done % config.log_every == 0 or done == config.steps):
            bar.set_postfix(loss=f"{sum(recent_losses) / len(recent_losses):.4f}")
            elapsed = time.perf_counter() - started
            sink.log_metrics({"loss": sum(recent_losses) / len(recent_losses), "lr": lr, "grad_norm": float(grad_norm),
                              "samples_per_s": (done - start_step) * config.batch_size / elapsed}, done)
        if done % config.checkpoint_every == 0 or done == config.steps:
            path, saved_step = save(done, final=done == config.steps), done
    bar.close()
    batches.close()  # stops the loader's workers now, not when the generator is collected
    final_step = max(config.steps, start_step)
    if saved_step != final_step:  # nothing left to run (or a zero-step run): still hand back a checkpoint
        path = resume_path if payload is not None and final_step == start_step and not sharded \
            else save(final_step, final=True)
    if env.world_size > 1 or sharded:
        dist.barrier()
    if created_group:
        dist.destroy_process_group()
    wall = time.perf_counter() - started
    steps_run = final_step - start_step
    return TrainResult(checkpoint=path, step=final_step,
                       final_loss=sum(recent_losses) / len(recent_losses) if recent_losses else float("nan"),
                       wall_s=wall, samples_per_s=steps_run * config.batch_size / wall if wall > 0 else 0.0,
                       attention_backend=attention)
