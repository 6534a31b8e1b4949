"""SAM and micro-sam models, loaded from checkpoint files the operator configures.

Nothing is ever downloaded: a model whose checkpoint is missing answers
:class:`~ilastik_web.errors.NotReadyError` (HTTP 503) naming the file. The encoder
architecture (embedding width, depth, heads, windowed and global attention blocks,
input size) is read from the checkpoint's own weights, so the original SAM models
(vit_b/l/h), micro-sam's fine-tuned light- and electron-microscopy variants (the same
architectures, e.g. ``vit_b_lm``, ``vit_l_em_organelles``) and small test models all
load through the same code. ``vit_t`` (MobileSAM's TinyViT encoder) needs the
``mobile_sam`` package, which PyPI does not carry; it is used when importable.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ilastik_web.errors import InvalidRequestError, NotFoundError, NotReadyError

log = logging.getLogger(__name__)

#: Architectures by the prefix of a model type (micro-sam names add a suffix: vit_b_lm).
ARCHITECTURES = ("vit_t", "vit_b", "vit_l", "vit_h")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HASH_CHUNK = 1 << 22


def choose_device(preferred: str | None = None) -> str:
    """``preferred`` if given, else "cuda" when a CUDA device is usable, else "cpu"."""
    import torch

    if preferred:
        return preferred
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class ModelSpec:
    """A model the server offers.

    Parameters
    ----------
    name
        What clients ask for (e.g. "vit_b_lm").
    model_type
        SAM / micro-sam type; its first five characters name the architecture
        (vit_t, vit_b, vit_l or vit_h).
    checkpoint
        Path of the weights file (a SAM state dict, or a micro-sam / torch-em checkpoint
        with a ``model_state``).
    """

    name: str
    model_type: str
    checkpoint: Path

    def __post_init__(self) -> None:
        if not _MODEL_NAME.match(self.name):
            raise InvalidRequestError(f"model name {self.name!r} must be 1-64 letters, digits, "
                                      "'_', '-' or '.'")
        if self.model_type[:5] not in ARCHITECTURES:
            raise InvalidRequestError(
                f"model type {self.model_type!r} must start with one of {ARCHITECTURES}"
            )
        object.__setattr__(self, "checkpoint", Path(self.checkpoint))

    @property
    def architecture(self) -> str:
        return self.model_type[:5]

    @classmethod
    def parse(cls, text: str) -> ModelSpec:
        """From ``"name=model_type:path"`` or ``"model_type:path"`` (name = model type)."""
        name, sep, rest = text.partition("=")
        if not sep:
            name, rest = "", text
        model_type, sep, path = rest.partition(":")
        if not sep or not model_type or not path:
            raise InvalidRequestError(
                f"model spec {text!r} is not [name=]model_type:/path/to/checkpoint.pt"
            )
        return cls(name or model_type, model_type, Path(path))


@dataclass
class LoadedModel:
    """A SAM model in memory, ready to embed and decode."""

    spec: ModelSpec
    sam: object  # segment_anything.modeling.Sam (or MobileSAM's)
    device: str
    model_hash: str  # of the checkpoint file's bytes

    @property
    def image_size(self) -> int:
        """Side of the square input the encoder embeds (1024 for released models)."""
        return int(self.sam.image_encoder.img_size)  # type: ignore[attr-defined]

    def predictor(self):
        """A fresh SamPredictor (they hold per-image state, so one per use)."""
        if self.spec.architecture == "vit_t":
            from mobile_sam import SamPredictor  # type: ignore[import-not-found]
        else:
            from segment_anything import SamPredictor
        predictor = SamPredictor(self.sam)
        # What micro-sam's functions read from the predictors its own loader makes.
        predictor.model_type = self.spec.model_type
        predictor.model_name = self.spec.name
        predictor._hash = self.model_hash
        return predictor


def file_hash(path: Path) -> str:
    """xxh3-128 of a file's bytes (fast enough for multi-GB checkpoints)."""
    import xxhash

    digest = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: Path) -> OrderedDict:
    """The SAM weights of a checkpoint file, micro-sam / torch-em wrappers removed."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch-em checkpoints pickle training objects too
        log.warning("%s is not a plain weights file (%s); loading it as a full pickle "
                    "(it was configured by the operator)", path, type(exc).__name__)
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise InvalidRequestError(f"cannot read checkpoint {path}: {exc2}") from None
    if not isinstance(state, Mapping):
        raise InvalidRequestError(f"checkpoint {path} does not hold a state dict")
    if "model_state" in state:
        state = state["model_state"]
    return OrderedDict(
        (key[4:] if key.startswith("sam.") else key, value) for key, value in state.items()
    )


@dataclass(frozen=True)
class VitArchitecture:
    """The SAM ViT encoder hyper-parameters, as read from weights."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int
    image_size: int
    mlp_ratio: float
    out_chans: int


def infer_vit_architecture(state: Mapping) -> VitArchitecture:
    """Read the encoder hyper-parameters from the shapes of a SAM ViT state dict."""
    try:
        patch = state["image_encoder.patch_embed.proj.weight"]
        pos = state["image_encoder.pos_embed"]
        out_chans = int(state["image_encoder.neck.0.weight"].shape[0])
    except KeyError as exc:
        raise InvalidRequestError(f"not a SAM ViT checkpoint (no {exc})") from None
    embed_dim, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    grid = int(pos.shape[1])
    blocks = sorted({int(m.group(1)) for key in state
                     if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", key))})
    if not blocks or blocks != list(range(len(blocks))):
        raise InvalidRequestError("SAM checkpoint has missing or no encoder blocks")
    global_blocks, window = [], 0
    head_dim = embed_dim
    for i in blocks:
        rel = state.get(f"image_encoder.blocks.{i}.attn.rel_pos_h")
        if rel is None:
            raise InvalidRequestError("SAM checkpoints use relative positions; block {i} has none")
        head_dim = int(rel.shape[1])
        size = (int(rel.shape[0]) + 1) // 2
        if size == grid:
            global_blocks.append(i)
        else:
            window = size
    hidden = int(state[f"image_encoder.blocks.{blocks[0]}.mlp.lin1.weight"].shape[0])
    return VitArchitecture(
        embed_dim=embed_dim,
        depth=len(blocks),
        num_heads=embed_dim // head_dim,
        global_attn_indexes=tuple(global_blocks),
        window_size=window,
        image_size=grid * patch_size,
        mlp_ratio=hidden / embed_dim,
        out_chans=out_chans,
    )


def build_sam(arch: VitArchitecture):
    """An uninitialised SAM with ``arch``'s encoder and SAM's prompt encoder and decoder."""
    import torch
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    patch_size = 16
    grid = arch.image_size // patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=arch.image_size, patch_size=patch_size, embed_dim=arch.embed_dim,
            depth=arch.depth, num_heads=arch.num_heads, mlp_ratio=arch.mlp_ratio,
            out_chans=arch.out_chans, qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
            window_size=arch.window_size, global_attn_indexes=arch.global_attn_indexes,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch.out_chans, image_embedding_size=(grid, grid),
            input_image_size=(arch.image_size, arch.image_size), mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=arch.out_chans, mlp_dim=2048,
                                          num_heads=8),
            transformer_dim=arch.out_chans, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def load_model(spec: ModelSpec, device: str | None = None) -> LoadedModel:
    """Load ``spec``'s checkpoint onto ``device`` (default: CUDA when present, else CPU).

    Raises
    ------
    NotReadyError
        The checkpoint file does not exist, or vit_t without ``mobile_sam``.
    InvalidRequestError
        The file is not a usable SAM checkpoint of ``spec.model_type``'s architecture.
    """
    if not spec.checkpoint.is_file():
        raise NotReadyError(
            f"model {spec.name!r}: checkpoint {spec.checkpoint} does not exist "
            "(weights are never downloaded; configure an existing file)"
        )
    device = choose_device(device)
    model_hash = file_hash(spec.checkpoint)
    state = read_state_dict(spec.checkpoint)
    if spec.architecture == "vit_t":
        sam = _build_vit_t(spec)
    else:
        arch = infer_vit_architecture(state)
        known = _KNOWN_WIDTHS.get(arch.embed_dim)
        if known is not None and known != spec.architecture:
            raise InvalidRequestError(
                f"model {spec.name!r}: {spec.checkpoint} holds a {known} model, "
                f"not {spec.architecture}"
            )
        sam = build_sam(arch)
    try:
        sam.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise InvalidRequestError(f"model {spec.name!r}: weights do not fit: {first}") from None
    sam.eval()
    sam.to(device)
    log.info("loaded SAM model %s (%s) from %s on %s", spec.name, spec.model_type,
             spec.checkpoint, device)
    return LoadedModel(spec, sam, device, model_hash)


_KNOWN_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def _build_vit_t(spec: ModelSpec):
    try:
        from mobile_sam import sam_model_registry  # type: ignore[import-not-found]
    except ImportError:
        raise NotReadyError(
            f"model {spec.name!r}: vit_t needs the mobile_sam package (MobileSAM), "
            "which is not installed"
        ) from None
    return sam_model_registry["vit_t"]()


class ModelRegistry:
    """The configured models, each loaded on first use and kept.

    Parameters
    ----------
    specs
        The models offered.
    device
        Force a device ("cpu", "cuda", "cuda:1"); default: CUDA when present.
    """

    def __init__(self, specs: Sequence[ModelSpec] = (), device: str | None = None):
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise InvalidRequestError(f"two models are named {spec.name!r}")
            self._specs[spec.name] = spec
        self._device = device
        self._lock = threading.Lock()
        self._loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, threading.Lock] = {}

    @property
    def names(self) -> list[str]:
        with self._lock:
            return list(self._specs)

    def add(self, spec: ModelSpec) -> None:
        """Offer one more model (e.g. a fine-tuned checkpoint); names stay unique."""
        with self._lock:
            if spec.name in self._specs:
                raise InvalidRequestError(f"a model is already named {spec.name!r}")
            self._specs[spec.name] = spec

    @property
    def default_name(self) -> str:
        if not self._specs:
            raise NotReadyError("no SAM model is configured (give the server a checkpoint)")
        return next(iter(self._specs))

    def spec(self, name: str | None) -> ModelSpec:
        name = name or self.default_name
        try:
            return self._specs[name]
        except KeyError:
            raise NotFoundError(f"no SAM model {name!r}; configured: {self.names}") from None

    def get(self, name: str | None = None) -> LoadedModel:
        """The loaded model ``name`` (default: the first configured), loading it once."""
        spec = self.spec(name)
        with self._lock:
            loaded = self._loaded.get(spec.name)
            if loaded is not None:
                return loaded
            gate = self._loading.setdefault(spec.name, threading.Lock())
        with gate:  # one load per model, however many callers ask at once
            with self._lock:
                loaded = self._loaded.get(spec.name)
            if loaded is None:
                loaded = load_model(spec, self._device)
                with self._lock:
                    self._loaded[spec.name] = loaded
            return loaded

    def describe(self) -> list[dict]:
        with self._lock:
            loaded = dict(self._loaded)
            specs = list(self._specs.values())
        return [
            {
                "name": spec.name,
                "model_type": spec.model_type,
                "checkpoint": str(spec.checkpoint),
                "available": spec.checkpoint.is_file(),
                "loaded": spec.name in loaded,
                "device": loaded[spec.name].device if spec.name in loaded else None,
            }
            for spec in specs
        ]
