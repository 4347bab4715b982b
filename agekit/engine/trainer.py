"""The one trainer every method runs under (single process or DDP via torchrun)."""
from __future__ import annotations

import csv
import itertools
import logging
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from agekit.config import dump_config
from agekit.crop import view_specs
from agekit.data.augment import AugmentSpec, augment_batch
from agekit.engine.checkpoint import read_checkpoint, save_checkpoint, unwrap
from agekit.engine.data import BatchSource, load_splits
from agekit.engine.distributed import init_distributed, shutdown_distributed
from agekit.engine.inference import autocast_context, to_input
from agekit.engine.precision import resolve_precision
from agekit.engine.setup import (
    init_from_checkpoint,
    make_optimizer,
    make_scheduler,
    relative_lr_groups,
    run_dir_for,
    seed_everything,
)
from agekit.errors import AgekitError
from agekit.io import write_json_atomic, write_text_atomic
from agekit.models.age_model import build_model

log = logging.getLogger(__name__)


@torch.no_grad()
def collect_outputs(model, batches, n_batches: int, device, precision: str, channels_last: bool):
    """The model's age outputs (concatenated along the batch; a dict of outputs key by key) and the ages over
    the first `n_batches` of `batches` (an iterator of (views, ages, genders); closed afterwards), with the
    model in eval mode and no gradient; its mode is restored. Returns (outputs, ages), or None for no batch."""
    net = unwrap(model)
    was_training = net.training
    outputs, ages = [], []
    net.eval()
    try:
        for views, batch_ages, _ in itertools.islice(batches, n_batches):
            x = to_input(views, device, channels_last)
            with autocast_context(device, precision):
                out = net(x)["age"]
            outputs.append({k: v.float() for k, v in out.items()} if isinstance(out, dict) else out.float())
            ages.append(torch.as_tensor(batch_ages).to(device).float())
    finally:
        batches.close()
        net.train(was_training)
    if not outputs:
        return None
    if isinstance(outputs[0], dict):
        return {k: torch.cat([o[k] for o in outputs]) for k in outputs[0]}, torch.cat(ages)
    return torch.cat(outputs), torch.cat(ages)


class CsvLog:
    FIELDS = ["step", "epoch", "split", "loss", "mae", "lr", "images_per_s", "elapsed_s"]

    def __init__(self, path: Path):
        self.path = path
        if not path.exists():
            with path.open("w", newline="") as f:
                csv.writer(f).writerow(self.FIELDS)

    def write(self, **row):
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([row.get(k, "") for k in self.FIELDS])


class Trainer:
    def __init__(self, cfg: dict, progress: bool = True):
        self.cfg, self.t = cfg, cfg["train"]
        self.ctx, self.device = init_distributed(self.t["device"])
        if self.t["num_threads"]:
            torch.set_num_threads(int(self.t["num_threads"]))
        self.precision = resolve_precision(self.t["precision"], self.device)
        self.channels_last = self.t["channels_last"]
        if self.channels_last == "auto":
            self.channels_last = self.device.type == "cuda" or self.precision == "bf16"
        self.progress = progress and self.t["progress"] and self.ctx.is_main
        self.run_dir = run_dir_for(cfg)
        self.main = self.ctx.is_main

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self):
        cfg, t, ctx = self.cfg, self.t, self.ctx
        seed_everything(cfg["seed"])
        # Rank 0 builds the crop cache; the others wait and then read it. The run directory appears only
        # once the data could be read, so a mistyped path leaves nothing behind.
        if self.main:
            data = load_splits(cfg, ("train", "val"), self.run_dir, progress=self.progress)
            write_text_atomic(self.run_dir / "config.yaml", dump_config(cfg))
        ctx.barrier()
        if not self.main:
            data = load_splits(cfg, ("train", "val"), None, progress=False)
        self.train_data, self.val_data, self.split_header = data["train"], data["val"], data["_split_header"]
        specs = view_specs(cfg)
        per_rank = max(1, t["batch_size"] // ctx.world)
        self.source = BatchSource(self.train_data, per_rank, shuffle=True, seed=cfg["seed"], rank=ctx.rank,
                                  world=ctx.world, specs=specs)
        if len(self.source) == 0:
            raise AgekitError(f"train split has {len(self.train_data.records)} images, fewer than one batch "
                              f"of {per_rank}; lower train.batch_size")
        self.steps_per_epoch = len(self.source)
        self.total_steps = t["epochs"] * self.steps_per_epoch
        if t["max_steps"]:
            self.total_steps = min(self.total_steps, int(t["max_steps"]))

        model = build_model(cfg)
        if t["init_from"]:
            init_from_checkpoint(model, t["init_from"], t["init_head"])
        resuming = t["resume"] and (self.run_dir / "last.pt").is_file()
        if t["bn_calibrate_images"] and not resuming:
            self._calibrate_batchnorm(model, int(t["bn_calibrate_images"]))
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(relative_lr_groups(model, t) if t["relative_lr"] else model.parameters(), t)
        self.scheduler = make_scheduler(self.optimizer, t, self.steps_per_epoch, self.total_steps)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.aug = AugmentSpec(**{k: v for k, v in cfg["augment"].items() if k != "enabled"})
        self.gen = torch.Generator().manual_seed(cfg["seed"] * 1000 + ctx.rank)
        self.state = {"epoch": 0, "batch_in_epoch": 0, "step": 0, "best_val_mae": None, "best_step": None,
                      "bad_validations": 0, "train_time_s": 0.0, "images_seen": 0}
        self.model = model
        self._maybe_resume()
        if ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.main:
            self.csv = CsvLog(self.run_dir / "metrics.csv")
            self.tb = self._tensorboard()

    def _calibrate_batchnorm(self, model, n: int) -> None:
        """Converted weights that stored only BN's folded affine (dlib's) get the running statistics of
        real training crops, unchanged in eval mode, so that batch statistics start near the pretrained
        function (see agekit.models.batchnorm)."""
        from agekit.models.batchnorm import calibrate_batchnorm

        views = self.train_data.views
        if views is None:
            raise AgekitError("train.bn_calibrate_images needs the crop cache (data.cache: true)")
        rows = np.sort(np.random.default_rng(self.cfg["seed"]).permutation(len(views[0]))[:n])
        x = to_input([torch.from_numpy(v[rows]) for v in views], torch.device("cpu"), False)
        nets = [model.backbone, *model.extra_backbones]
        with torch.no_grad():
            for net, view in zip(nets, x):
                calibrate_batchnorm(net, (view - model.pixel_mean) / model.pixel_std)
        log.info("batch-norm statistics calibrated on %d training crops", len(rows))

    def _tensorboard(self):
        if not self.t["tensorboard"]:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed; logging to metrics.csv only")
            return None
        return SummaryWriter(str(self.run_dir / "tb"))

    def _maybe_resume(self):
        last = self.run_dir / "last.pt"
        if not (self.t["resume"] and last.is_file()):
            return
        payload = read_checkpoint(last)
        self.model.load_state_dict(payload["model"])
        st = payload["state"]
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.gen.set_state(st["aug_rng"][self.ctx.rank % len(st["aug_rng"])])
        self.state.update({k: st[k] for k in self.state})
        if self.main:
            log.info("resuming %s from step %d (epoch %d)", last, self.state["step"], self.state["epoch"] + 1)

    # ---- checkpoints --------------------------------------------------------------------------
    def _save(self, name: str, full: bool, metrics: dict | None = None):
        # A full (resumable) checkpoint holds each rank's augmentation RNG, so a resumed DDP run replays
        # exactly; every rank calls this with the same `full`, so the gather is collective.
        states = [self.gen.get_state()]
        if full and self.ctx.enabled:
            import torch.distributed as dist

            gathered = [None] * self.ctx.world
            dist.all_gather_object(gathered, states[0])
            states = gathered
        if not self.main:
            return
        state = dict(self.state)
        if full:
            state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                         aug_rng=states)
        save_checkpoint(self.run_dir / name, self.model, self.cfg, state=state, metrics=metrics)

    # ---- the loop -----------------------------------------------------------------------------
    def augment(self, views: list) -> list:
        """Augment every view with the same random draws, so all views of a face move together."""
        state = self.gen.get_state()
        out = []
        for i, view in enumerate(views):
            if i:
                self.gen.set_state(state)
            out.append(augment_batch(view, self.aug, self.gen))
        return out

    def step_batch(self, views, ages, genders):
        x = to_input(views, self.device, self.channels_last)
        if self.cfg["augment"]["enabled"]:
            x = self.augment(x)
        ages, genders = ages.to(self.device), genders.to(self.device)
        with autocast_context(self.device, self.precision):
            out = self.model(x)
        method = unwrap(self.model).method
        loss, parts = method.loss(out["age"], ages)
        if "gender" in out and bool((genders >= 0).any()):
            g_loss = F.cross_entropy(out["gender"], genders, ignore_index=-1)
            loss = loss + self.cfg["gender"]["weight"] * g_loss
            parts["gender"] = float(g_loss.detach())
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.t["grad_clip"]:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(self.t["grad_clip"]))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if not isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step()
        mae = float((method.decode(out["age"]).mean - ages).abs().mean())
        return float(loss.detach()), mae

    @torch.inference_mode()
    def validate(self) -> float:
        """Validation MAE over the whole val split; each rank scores a shard, sums are all-reduced."""
        self.ctx.broadcast_buffers(unwrap(self.model))
        net = unwrap(self.model)
        net.eval()
        idx = np.arange(self.ctx.rank, len(self.val_data.records), self.ctx.world)
        abs_sum = 0.0
        bs = self.t["eval_batch_size"]
        for start in range(0, len(idx), bs):
            part = idx[start:start + bs]
            x = to_input([view[part] for view in self.val_data.views], self.device, self.channels_last)
            with autocast_context(self.device, self.precision):
                pred = net.method.decode(net(x)["age"]).mean.float().cpu().numpy()
            abs_sum += float(np.abs(pred - self.val_data.ages[part]).sum())
        net.train()
        total, count = self.ctx.all_sum([abs_sum, float(len(idx))])
        return total / max(count, 1.0)

    def after_validation(self, val_mae: float) -> bool:
        """Record a validation; save best/last; return True when early stopping says stop."""
        st = self.state
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_mae)
        improved = st["best_val_mae"] is None or val_mae < st["best_val_mae"] - 1e-4
        if improved:
            st.update(best_val_mae=val_mae, best_step=st["step"], bad_validations=0)
            self._save("best.pt", full=False, metrics={"val_mae": val_mae, "step": st["step"]})
        else:
            st["bad_validations"] += 1
        self._save("last.pt", full=True, metrics={"val_mae": val_mae, "step": st["step"]})
        if self.main:
            lr = self.optimizer.param_groups[-1]["lr"]
            self.csv.write(step=st["step"], epoch=f"{self.epochs_done():.3f}", split="val", mae=f"{val_mae:.4f}",
                           lr=f"{lr:.3g}", elapsed_s=f"{st['train_time_s']:.1f}")
            if self.tb:
                self.tb.add_scalar("val/mae", val_mae, st["step"])
            log.info("step %d epoch %.2f: val MAE %.3f%s", st["step"], self.epochs_done(), val_mae,
                     " (best)" if improved else "")
        patience = self.t["early_stop_patience"]
        return bool(patience) and st["bad_validations"] >= patience

    def fit(self) -> dict:
        st, t = self.state, self.t
        self.model.train()
        stop = st["step"] >= self.total_steps
        bar = tqdm(total=self.total_steps, initial=st["step"], disable=not self.progress, desc="train",
                   unit="step", dynamic_ncols=True)
        window_t0, window_imgs = time.perf_counter(), 0
        validated_at = None
        while not stop and st["epoch"] < t["epochs"]:
            # train_time_s counts loading + stepping (what the crop cache speeds up), not validation
            tick = time.perf_counter()
            for views, ages, genders in self.source.batches(st["epoch"], skip=st["batch_in_epoch"]):
                loss, mae = self.step_batch(views, ages, genders)
                now = time.perf_counter()
                st["train_time_s"] += now - tick
                tick = now
                st["step"] += 1
                st["batch_in_epoch"] += 1
                st["images_seen"] += len(ages) * self.ctx.world
                window_imgs += len(ages) * self.ctx.world
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}", mae=f"{mae:.2f}", epoch=st["epoch"] + 1)
                if self.main and st["step"] % t["log_every_steps"] == 0:
                    rate = window_imgs / max(time.perf_counter() - window_t0, 1e-9)
                    window_t0, window_imgs = time.perf_counter(), 0
                    self._log_train(loss, mae, rate)
                if st["step"] >= self.total_steps:
                    stop = True
                    break
                if t["val_every_steps"] and st["step"] % int(t["val_every_steps"]) == 0:
                    validated_at = st["step"]
                    if self.after_validation(self.validate()):
                        stop = True
                        break
                    tick = time.perf_counter()
            if st["batch_in_epoch"] >= self.steps_per_epoch:
                st["epoch"] += 1
                st["batch_in_epoch"] = 0
                self.method_epoch_end()
            # without val_every_steps: validate each epoch end; with it: only at the very end in addition
            at_end = stop or st["epoch"] >= t["epochs"]
            if validated_at != st["step"] and (not t["val_every_steps"] or at_end):
                validated_at = st["step"]
                stop = self.after_validation(self.validate()) or stop
        bar.close()
        return self.summary()

    def method_epoch_end(self) -> None:
        """The method's epoch-end step (see Method.epoch_end): it gets the outputs it asked for, nothing else."""
        method = unwrap(self.model).method
        if method.epoch_end_batches > 0:
            collected = collect_outputs(self.model, self.source.batches(self.state["epoch"]),
                                        method.epoch_end_batches, self.device, self.precision, self.channels_last)
            if collected is not None:
                method.epoch_end(*collected)

    def epochs_done(self) -> float:
        """Training progress in epochs (fractional): the 'epoch' column of metrics.csv."""
        return self.state["step"] / self.steps_per_epoch

    def _log_train(self, loss: float, mae: float, rate: float):
        st = self.state
        lr = self.optimizer.param_groups[-1]["lr"]
        self.csv.write(step=st["step"], epoch=f"{self.epochs_done():.3f}", split="train", loss=f"{loss:.4f}",
                       mae=f"{mae:.3f}", lr=f"{lr:.3g}", images_per_s=f"{rate:.1f}",
                       elapsed_s=f"{st['train_time_s']:.1f}")
        if self.tb:
            self.tb.add_scalar("train/loss", loss, st["step"])
            self.tb.add_scalar("train/mae", mae, st["step"])
            self.tb.add_scalar("train/images_per_s", rate, st["step"])

    def weight_checksums(self) -> list[float]:
        """One checksum of all weights and buffers per rank: equal values prove the ranks stayed in sync."""
        self.ctx.broadcast_buffers(unwrap(self.model))
        total = float(sum(t.detach().double().sum() for t in unwrap(self.model).state_dict().values()
                          if t.is_floating_point()))
        if not self.ctx.enabled:
            return [total]
        import torch.distributed as dist

        gathered = [None] * self.ctx.world
        dist.all_gather_object(gathered, total)
        return gathered

    def summary(self) -> dict:
        st = self.state
        checksums = self.weight_checksums()
        summary = {
            "run_dir": str(self.run_dir),
            "best_val_mae": st["best_val_mae"],
            "best_step": st["best_step"],
            "steps": st["step"],
            "epochs_completed": st["epoch"],
            "train_time_s": round(st["train_time_s"], 2),
            "train_images_per_s": round(st["images_seen"] / max(st["train_time_s"], 1e-9), 1),
            "world_size": self.ctx.world,
            "rank_weight_checksums": checksums,
            "device": str(self.device),
            "precision": self.precision,
            "n_train": len(self.train_data.records),
            "n_val": len(self.val_data.records),
            "split": self.split_header,
        }
        if self.main:
            write_json_atomic(self.run_dir / "summary.json", summary)
            if self.tb:
                self.tb.close()
        return summary


def train(cfg: dict, progress: bool = True) -> dict:
    """Train as the config says; returns the run summary. SIGTERM/Ctrl-C save last.pt before exiting."""
    trainer = Trainer(cfg, progress)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    except ValueError:  # not the main thread
        previous = None
    try:
        trainer.setup()
        try:
            return trainer.fit()
        except KeyboardInterrupt:
            trainer._save("last.pt", full=True)
            if trainer.main:
                log.warning("interrupted at step %d; last.pt saved, run the same command to resume",
                            trainer.state["step"])
            raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        shutdown_distributed()
