"""`cod train CONFIG [--set key=value ...]`: one stage of training from a YAML config.

The config (see cod/train/configs/) names the stage, the model, the data, the optimiser
and the trainer. Each run writes ``<output>/checkpoints/last.ckpt`` (Lightning, for
resuming) and, at the end, ``<output>/model.safetensors``: the EMA weights with the model
config embedded (LoRA merged), which `cod.load` and the next stage's ``init_from`` read.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import yaml
from torch.utils.data import DataLoader, Sampler

from cod.errors import CodError, UsageError

CONFIG_DIR = Path(__file__).parent / "configs"


# ------------------------------------------------------------------ config
def load_config(name_or_path: str, overrides: list[str] | None = None) -> dict[str, Any]:
    """A stage config from a path or a shipped name (``tiny-pretrain``), through OmegaConf:
    ``base: NAME`` inherits from another config (mappings merged key by key, other values
    replaced), then ``a.b=value`` overrides (values parsed as YAML) replace one value each.
    Returns plain dicts and lists."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(name_or_path)
    if not path.is_file():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise UsageError(f"config {name_or_path!r} not found (shipped configs: {shipped})")
    try:
        cfg = OmegaConf.create(yaml.safe_load(path.read_text()) or {})
        if "base" in cfg:
            base = cfg.pop("base")
            cfg = OmegaConf.merge(OmegaConf.create(load_config(base)), cfg)
        for item in overrides or []:
            if "=" not in item:
                raise UsageError(f"--set expects key=value, got {item!r}")
            key, value = item.split("=", 1)
            OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise CodError(f"config {name_or_path}: {str(exc).splitlines()[0]}") from None


def model_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The model config of a stage: a named model of any family (``codlite-0.0039``,
    ``cod-pixel-0.0039-256``, ...) with ``overrides``, checked by its family's typed config
    (an unknown or misspelt key is an error naming it)."""
    from cod.families import check_config, model_config as named_config

    m = cfg.get("model", {})
    name = m.get("name")
    mc = named_config(name) if name else {}
    mc.update(m.get("overrides", {}))
    mc["name"] = m.get("save_name", mc.get("name", "codlite-custom"))
    check_config(mc, f"model {name} with model.overrides")
    return mc


# ------------------------------------------------------------------ data
class StepSampler(Sampler[int]):
    """Indices for global steps ``start_step`` on: rank r of w takes its slice of each
    global batch. Deterministic, so resuming continues with the very next batch."""

    def __init__(self, batch_size: int, accumulate: int, max_steps: int, rank: int = 0, world: int = 1, start_step: int = 0):
        self.batch, self.accumulate, self.max_steps = batch_size, accumulate, max_steps
        self.rank, self.world, self.start_step = rank, world, start_step

    def __iter__(self) -> Iterator[int]:
        per_step = self.batch * self.accumulate * self.world
        for step in range(self.start_step, self.max_steps):
            for micro in range(self.accumulate):
                base = step * per_step + (micro * self.world + self.rank) * self.batch
                yield from range(base, base + self.batch)

    def __len__(self) -> int:
        # The whole run is one epoch. The length counts from step 0, because a resumed
        # Lightning epoch already counts the batches done before the checkpoint; iteration
        # itself starts at ``start_step``.
        return self.max_steps * self.batch * self.accumulate


# ------------------------------------------------------------------ run
def _init_weights(module, path: str, strict: bool) -> set[str]:
    """Load ``path`` into ``module.net``; returns the names of the tensors it did not supply."""
    from cod.checkpoint import check_state_dict, read_weights

    _, state = read_weights(path)
    own = module.net.state_dict()
    if strict:
        check_state_dict(module.net, state)
    else:
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = module.net.load_state_dict(state, strict=False).missing_keys
    print(f"initialised from {path}: {len(state)} tensors" + (f", {len(missing)} kept fresh" if missing else ""))
    return set(missing)


def _apply_lora(module, lora: dict[str, Any]) -> None:
    """LoRA on the diffusion CNN, full training of the codec and depthwise convs (spec §4.4).

    Unlike the official name matching (spec §9.6) we also fully train ``pixel_condition_proj``
    (official ``y_embedder_x``) and the pixel head's norms instead of freezing them by accident.
    """
    import peft
    from torch import nn

    targets, full = [], ["condition", "pixel_condition_proj"]
    for name, m in module.net.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and not name.startswith(("condition", "pixel_condition_proj")):
            if isinstance(m, nn.Conv2d) and m.groups > 1:
                full.append(name)
            else:
                targets.append(name)
    full += [n for n, m in module.net.named_modules() if isinstance(m, (nn.LayerNorm,)) or n.endswith("final_layer.norm")]
    cfg = peft.LoraConfig(r=lora.get("r", 32), lora_alpha=lora.get("alpha", 32), lora_dropout=0.0, bias="none", target_modules=targets, modules_to_save=sorted(set(full)))
    module.net = peft.get_peft_model(module.net, cfg)


def _uses_cuda(tr: dict[str, Any]) -> bool:
    return tr.get("accelerator", "auto") in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(tr: dict[str, Any]) -> tuple[str, str | None]:
    """Lightning's precision for ``trainer.precision`` and a one-line note (None: nothing to say).

    ``auto`` (the shipped configs) is bf16 autocast where bf16 is native (a CUDA device, or a
    CPU with AVX-512 BF16 or AMX) and float32 elsewhere: on an AVX2-only CPU bf16 products are
    emulated, and a training step of codlite-small runs ~13x slower than in float32
    (docs/training.md). An explicit bf16 setting is kept, with a warning on such a CPU."""
    from cod.inference import cpu_native_bf16

    requested = str(tr.get("precision", "32-true"))
    native = _uses_cuda(tr) or cpu_native_bf16()
    if requested == "auto":
        chosen = "bf16-mixed" if native else "32-true"
        return chosen, f"precision: {chosen} (auto: {'native bf16' if native else 'no native bf16 on this CPU'})"
    if requested.startswith("bf16") and not native:
        return requested, f"warning: trainer.precision={requested} on a CPU without native bf16 (AVX-512 BF16 or AMX) is much slower than float32 here; set trainer.precision=auto or 32-true"
    return requested, None


def _world_size(tr: dict[str, Any]) -> int:
    """Processes the trainer will run (for gradient accumulation to the global batch)."""
    devices = tr.get("devices", 1)
    if devices in ("auto", -1, "-1"):
        n = torch.cuda.device_count() if _uses_cuda(tr) else 1
    elif isinstance(devices, (list, tuple)):
        n = len(devices)
    else:
        n = int(devices)
    return max(1, n) * int(tr.get("num_nodes", 1))


def _discriminator_saver(path: Path):
    """A Lightning callback that writes the online discriminator at the end of fit, for
    ``adversarial.init_from`` of a later run: only the generator is exported as a model, and
    a new discriminator costs a continuation its warm-up."""
    from lightning.pytorch.callbacks import Callback

    from cod.train.discriminator import save_discriminator

    class SaveDiscriminator(Callback):
        def on_train_end(self, trainer, pl_module) -> None:
            if trainer.is_global_zero and getattr(pl_module, "disc", None) is not None:
                save_discriminator(path, pl_module.disc)
                print(f"saved the discriminator to {path}")

    return SaveDiscriminator()


def train(cfg: dict[str, Any], callbacks: list[Any] | None = None) -> Path:
    """Run one stage; returns the path of the exported model.safetensors. ``callbacks``:
    extra Lightning callbacks (tests, monitoring)."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint

    from cod.checkpoint import save_weights
    from cod.train.data import RandomCropDataset
    from cod.train.lite_module import CoDLiteModule

    out = Path(cfg.get("output", "runs/train"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    seed = int(cfg.get("seed", 0))
    pl.seed_everything(seed, workers=True, verbose=False)
    mc = model_config(cfg)
    opt, tr, data = cfg.get("optim", {}), cfg.get("trainer", {}), cfg["data"]
    max_steps = int(tr["max_steps"])
    batch = int(data["batch_size"])
    world = _world_size(tr)
    accumulate = int(tr.get("accumulate_grad_batches", 0)) or max(1, math.ceil(int(data.get("global_batch", batch)) / (batch * world)))
    distill = cfg["stage"] == "distill"
    adversarial = bool(cfg.get("adversarial"))
    if adversarial and (cfg["stage"] != "onestep" or accumulate > 1 or cfg.get("lora")):
        raise CodError("adversarial: needs stage onestep, full fine-tuning (lora: null) and no gradient accumulation (global_batch = batch_size x devices)")
    if opt.get("decay_steps") and cfg["stage"] not in ("pretrain", "onestep"):
        raise CodError(f"optim.decay_steps is for the CoD-Lite stages (pretrain, onestep), not stage {cfg['stage']!r}")
    if float(opt.get("fresh_lr_scale", 1.0)) != 1.0 and (cfg["stage"] not in ("pretrain", "onestep") or not cfg.get("init_from")):
        raise CodError("optim.fresh_lr_scale is for a CoD-Lite stage (pretrain, onestep) that warm-starts with init_from")
    if distill:  # stage II-2: manual optimisation, the module accumulates gradients itself
        from cod.train.distill import build_distill_module

        if cfg.get("lora"):
            raise CodError("stage distill trains the student fully: set lora: null")
        module = build_distill_module(cfg, mc, seed, accumulate)
    elif cfg["stage"] == "cod-pretrain":  # CoD (DiT) stages 1-3 (CoD spec §8)
        from cod.train.cod_module import build_cod_module

        if cfg.get("lora"):
            raise CodError("stage cod-pretrain trains the network fully: set lora: null")
        module = build_cod_module(cfg, mc, seed)
    else:
        module = CoDLiteModule(mc, stage=cfg["stage"], lr=float(opt.get("lr", 1e-4)), betas=tuple(opt.get("betas", (0.9, 0.999))), weight_decay=float(opt.get("weight_decay", 0.0)), loss=cfg.get("loss"), backbone=cfg.get("backbone", "none"), backbone_weights=cfg.get("backbone_weights"), seed=seed, lpips_weights_dir=cfg.get("lpips_weights_dir"), vq_restart=cfg.get("vq_restart"), lr_decay_steps=int(opt.get("decay_steps", 0) or 0), adversarial=cfg.get("adversarial"), fresh_lr_scale=float(opt.get("fresh_lr_scale", 1.0)))
    if cfg.get("init_from"):
        fresh = _init_weights(module, cfg["init_from"], bool(cfg.get("init_strict", True)))
        if isinstance(module, CoDLiteModule):  # optim.fresh_lr_scale applies to these
            module.fresh_parameters = fresh
    if cfg.get("lora"):
        _apply_lora(module, cfg["lora"])
    if not data.get("sources"):
        raise UsageError("no training data: set data.sources (`cod train NAME --data DIR`)")
    dataset = RandomCropDataset(data["sources"], int(data["size"]), flip=bool(data.get("flip", True)), seed=seed, scale=tuple(data.get("scale", (1.0, 1.0))), cache=bool(data.get("cache", False)))
    print(f"training data: {len(dataset.files)} images ({dataset.stats.summary()})")

    ckpt_dir = out / "checkpoints"
    resume = ckpt_dir / "last.ckpt" if cfg.get("resume", True) and (ckpt_dir / "last.ckpt").is_file() else None
    start_step = torch.load(resume, map_location="cpu", weights_only=False)["global_step"] if resume else 0

    class Data(pl.LightningDataModule):
        def train_dataloader(self):
            trainer = self.trainer
            sampler = StepSampler(batch, accumulate, max_steps, trainer.global_rank, trainer.world_size, start_step)
            return DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=int(data.get("workers", 0)), drop_last=True, persistent_workers=False)

    loggers: list[Any] = [pl.loggers.CSVLogger(out, name="logs")]
    try:
        loggers.append(pl.loggers.TensorBoardLogger(out, name="tb"))
    except ModuleNotFoundError:
        pass
    extra, callbacks = list(callbacks or []), [
        ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=int(tr.get("checkpoint_every", 1000)), save_top_k=0 if not tr.get("keep_checkpoints") else -1),
    ]
    if cfg.get("ema_decay", 0.9999) is not None:  # ema_decay: null exports the online weights
        callbacks.insert(0, EMAWeightAveraging(decay=float(cfg.get("ema_decay", 0.9999))))
    if adversarial:  # before the EMA callback, whose on_train_end swaps the averaged weights in
        callbacks.insert(0, _discriminator_saver(out / "discriminator.safetensors"))
    callbacks += extra
    precision, note = resolve_precision(tr)
    if note:
        print(note)
    trainer = pl.Trainer(
        max_steps=max_steps,
        accumulate_grad_batches=1 if distill or adversarial else accumulate,
        accelerator=tr.get("accelerator", "auto"),
        devices=tr.get("devices", 1),
        num_nodes=int(tr.get("num_nodes", 1)),
        strategy=tr.get("strategy", "auto"),
        precision=precision,
        callbacks=callbacks,
        logger=loggers,
        log_every_n_steps=int(tr.get("log_every", 10)),
        enable_progress_bar=bool(tr.get("progress_bar", True)),
        use_distributed_sampler=False,
        enable_model_summary=False,
        max_epochs=-1,
        max_time=tr.get("max_time"),  # e.g. "00:01:30:00": stop (and export) after this wall time
        gradient_clip_val=None if distill or adversarial else tr.get("gradient_clip_val"),
        deterministic=bool(tr.get("deterministic", False)),
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=Data(), ckpt_path=str(resume) if resume else None)
    seconds = time.perf_counter() - t0
    done = trainer.global_step - start_step
    # EMAWeightAveraging has swapped the averaged weights into the module at the end of fit.
    net = module.net  # stage distill: the student
    if cfg.get("lora"):
        net = net.merge_and_unload()
    path = out / "model.safetensors"
    if trainer.world_size > 1:  # lets a user (and the tests) check that every rank agrees
        import hashlib

        digest = hashlib.sha256(b"".join(v.detach().cpu().contiguous().numpy().tobytes() for v in net.state_dict().values())).hexdigest()
        (out / f"weights-rank{trainer.global_rank}.sha256").write_text(digest + "\n")
    if trainer.is_global_zero:
        save_weights(path, net.state_dict(), mc)
        print(f"exported {'EMA' if cfg.get('ema_decay', 0.9999) is not None else 'online'} weights to {path}")
        # throughput of this invocation (a resumed run counts only its own steps): the
        # one-command recipe (benchmarks/train_default.sh) sizes its next phase from it
        summary = {"steps": int(trainer.global_step), "steps_this_run": int(done), "seconds_this_run": round(seconds, 2), "steps_per_second": round(done / seconds, 4) if seconds > 0 else None, "precision": precision}
        (out / "train_summary.json").write_text(json.dumps(summary) + "\n")
        print(f"trained {done} steps in {seconds:.0f} s ({summary['steps_per_second']} steps/s); {trainer.global_step} in all")
    return path


def main(args) -> int:
    """`cod train CONFIG [--data DIR ...] [--set k=v ...] [-o OUT] [--force]`."""
    cfg = load_config(args.config, args.set)
    if args.output:
        cfg["output"] = args.output
    if getattr(args, "data", None):
        cfg.setdefault("data", {})["sources"] = list(args.data)
    if not cfg.get("data", {}).get("sources"):
        raise UsageError(
            f"config {args.config}: no training data; pass --data DIR (a folder of photos; a clone has four in tests/data/photos) "
            "or --set data.sources=[DIR,...]"
        )
    exported = Path(cfg.get("output", "runs/train")) / "model.safetensors"
    if exported.exists() and not getattr(args, "force", False):
        raise UsageError(f"{exported} exists (a finished run); pass --force to replace it (training continues from {exported.parent}/checkpoints/last.ckpt if there is one), or choose another -o")
    train(cfg)
    return 0
