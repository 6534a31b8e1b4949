"""Fine-tune a SAM / micro-sam model on a training set, with micro-sam's own training code.

The training set is a ``tiff`` layout written by
:func:`ilastik_web.collections.trainingset.export_training_set` (``train/images``,
``train/labels``, ``val/...``). micro-sam builds the data loader
(``micro_sam.training.default_sam_loader``: patches, objects sampled per batch), turns
labels into prompts (``ConvertToSamInputs``) and trains (``SamTrainer``, torch-em's trainer
with micro-sam's iterative prompting loss). The model starts from the weights of the
given checkpoint, loaded by our own loader, so any SAM-architecture checkpoint (also the
tiny ones of the tests) can be fine-tuned. The result is one checkpoint file that the
server loads as a new model (``--sam-model name=type:result.pt``).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ilastik_web.errors import InvalidRequestError
from ilastik_web.sam.embeddings import Cancelled
from ilastik_web.sam.models import ModelSpec, choose_device, file_hash, load_model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinetuneSettings:
    """Training parameters (micro-sam's names).

    Attributes
    ----------
    iterations
        Optimiser steps.
    patch_shape
        (rows, cols) of the training patches (at most the smallest image).
    batch_size, lr
        Per step.
    n_objects_per_batch, n_sub_iteration
        Objects sampled per batch; iterative prompting rounds per step.
    """

    iterations: int = 1000
    patch_shape: tuple[int, int] = (256, 256)
    batch_size: int = 1
    lr: float = 1e-5
    n_objects_per_batch: int = 25
    n_sub_iteration: int = 8

    def __post_init__(self) -> None:
        if int(self.iterations) < 1:
            raise InvalidRequestError("iterations must be >= 1")
        if len(self.patch_shape) != 2 or min(self.patch_shape) < 16:
            raise InvalidRequestError("patch_shape is two sides of at least 16 pixels")
        if int(self.batch_size) < 1 or int(self.n_objects_per_batch) < 1 \
                or int(self.n_sub_iteration) < 1:
            raise InvalidRequestError("batch_size, n_objects_per_batch and n_sub_iteration "
                                      "must be >= 1")
        if not 0 < float(self.lr) < 1:
            raise InvalidRequestError("lr must be in (0, 1)")


def settings_from_json(options: Any) -> FinetuneSettings:
    """Settings from a request's ``{"iterations", "patch", "batch_size", "lr",
    "n_objects_per_batch", "n_sub_iteration"}`` (all optional numbers; ``patch`` is the
    side of square patches)."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InvalidRequestError("settings must be a JSON object")
    known = {"iterations", "patch", "batch_size", "lr", "n_objects_per_batch",
             "n_sub_iteration"}
    if set(options) - known or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in options.values()):
        raise InvalidRequestError(f"settings are numbers among {sorted(known)}")
    options = dict(options)
    if "patch" in options:
        options["patch_shape"] = (int(options.pop("patch")),) * 2
    return FinetuneSettings(**options)


class _Progress:
    """The tqdm-like object torch-em's trainer reports to; raises Cancelled on request.

    ``last`` holds what the logger saw of the latest step (loss, learning rate, epoch);
    ``on_step`` receives it with the step count after each step.
    """

    def __init__(self, report: Callable[[int, int], None], should_stop: Callable[[], bool],
                 on_step: Callable[[dict], None] | None = None):
        self.total = 0
        self.n = 0
        self.last: dict[str, Any] = {}
        self._report = report
        self._should_stop = should_stop
        self._on_step = on_step

    def update(self, steps: int = 1) -> None:
        self.n += int(steps)
        self._report(self.n, self.total)
        if self._on_step is not None:
            self._on_step({"step": self.n, "steps": self.total, **self.last})
        if self._should_stop():
            raise Cancelled("fine-tuning cancelled")

    def set_description(self, desc: str, **kwargs) -> None:
        log.debug("fine-tuning: %s", desc)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass


def _reporting_logger(progress: _Progress):
    """micro-sam's logger (tensorboard), also handing each step's loss to ``progress``."""
    from micro_sam.training.sam_trainer import SamLogger

    class ReportingLogger(SamLogger):
        def __init__(self, trainer, save_root, **kwargs):
            super().__init__(trainer, save_root, **kwargs)
            self._trainer = trainer

        def log_train(self, step, loss, lr, *args, **kwargs):
            progress.last = {"loss": float(loss.detach() if hasattr(loss, "detach") else loss),
                             "lr": float(lr),
                             "epoch": int(getattr(self._trainer, "_epoch", 0))}
            super().log_train(step, loss, lr, *args, **kwargs)

    return ReportingLogger


def _loader(folder: Path, settings: FinetuneSettings, is_train: bool):
    from micro_sam.training import default_sam_loader

    return default_sam_loader(
        raw_paths=str(folder / "images"), raw_key="*.tif",
        label_paths=str(folder / "labels"), label_key="*.tif",
        patch_shape=tuple(int(s) for s in settings.patch_shape),
        with_segmentation_decoder=False, batch_size=int(settings.batch_size),
        is_train=is_train, shuffle=is_train, num_workers=0,
        n_samples=max(int(settings.iterations), 1) * int(settings.batch_size) if is_train
        else max(1, int(settings.batch_size)),
    )


def finetune(spec: ModelSpec, training_set: Path, output: Path, settings: FinetuneSettings,
             *, device: str | None = None,
             progress: Callable[[int, int], None] = lambda done, total: None,
             should_stop: Callable[[], bool] = lambda: False,
             on_step: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train ``spec``'s model on ``training_set`` and write the result to ``output``.

    ``progress(done, total)`` is called after each step, ``on_step`` (if given) with
    ``{"step", "steps", "loss", "lr", "epoch"}``; ``should_stop()`` true stops the
    training (:class:`Cancelled`) and nothing is written.

    Returns
    -------
    dict
        ``{"checkpoint", "iterations", "seconds", "steps_per_s", "device", "base_model"}``.
    """
    import torch
    from micro_sam.training import ConvertToSamInputs, SamTrainer
    from micro_sam.training.trainable_sam import TrainableSAM

    training_set = Path(training_set)
    train_dir, val_dir = training_set / "train", training_set / "val"
    if not (train_dir / "images").is_dir() or not (train_dir / "labels").is_dir():
        raise InvalidRequestError(f"{training_set} is not a tiff-layout training set "
                                  "(train/images, train/labels)")
    if not (val_dir / "images").is_dir():
        val_dir = train_dir  # one annotated item: validate on it
    device = choose_device(device)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    base = load_model(spec, device)  # a fresh copy: the served model is never trained
    sam = base.sam
    sam.train()
    model = TrainableSAM(sam)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=float(settings.lr))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min",
                                                           factor=0.9, patience=3)
    train_loader = _loader(train_dir, settings, True)
    val_loader = _loader(val_dir, settings, False)
    tracker = _Progress(progress, should_stop, on_step)
    with tempfile.TemporaryDirectory(prefix=".finetune-", dir=output.parent) as work:
        trainer = SamTrainer(
            name="finetune", save_root=work, train_loader=train_loader,
            val_loader=val_loader, model=model, optimizer=optimizer, device=device,
            lr_scheduler=scheduler, logger=_reporting_logger(tracker), log_image_interval=10**9,
            mixed_precision=device != "cpu",
            convert_inputs=ConvertToSamInputs(transform=model.transform,
                                              box_distortion_factor=0.025),
            n_objects_per_batch=int(settings.n_objects_per_batch),
            n_sub_iteration=int(settings.n_sub_iteration), compile_model=False,
            early_stopping=None, mask_prob=0.5,
        )
        t0 = time.perf_counter()
        try:
            trainer.fit(iterations=int(settings.iterations), progress=tracker)
        finally:  # its tensorboard writer flushes in a thread: close it before the folder goes
            writer = getattr(getattr(trainer, "logger", None), "tb", None)
            if writer is not None:
                writer.close()
        seconds = time.perf_counter() - t0
        state = {"model_state": {k: v.detach().cpu() for k, v in sam.state_dict().items()},
                 "finetuned_from": {"name": spec.name, "model_type": spec.model_type,
                                    "hash": base.model_hash},
                 "settings": asdict(settings), "training_set": str(training_set)}
        tmp = Path(work) / "result.pt"
        torch.save(state, tmp)
        os.replace(tmp, output)
        shutil.rmtree(Path(work) / "logs", ignore_errors=True)
    steps = int(settings.iterations)
    log.info("fine-tuned %s for %d steps in %.1f s on %s -> %s", spec.name, steps, seconds,
             device, output)
    return {"checkpoint": str(output), "checkpoint_hash": file_hash(output),
            "iterations": steps, "seconds": round(seconds, 3),
            "steps_per_s": round(steps / seconds, 4) if seconds else None, "device": device,
            "base_model": spec.name, "model_type": spec.model_type,
            "final_loss": tracker.last.get("loss")}
