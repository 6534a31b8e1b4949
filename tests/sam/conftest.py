"""Fixtures of the SAM tests: a tiny random SAM saved as checkpoints, a small volume."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("segment_anything")
pytest.importorskip("torchvision")

from sam_fixtures import blobs, build_tiny_sam  # noqa: E402

from ilastik_web.abc import MultiscaleVolume  # noqa: E402
from ilastik_web.sam import ModelSpec, SamService, SamSettings  # noqa: E402
from ilastik_web.sources.array import ArrayVolume  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sam") / "tiny_vit_b.pt"
    torch.save(build_tiny_sam().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_microsam_checkpoint(tmp_path_factory) -> Path:
    """The same weights wrapped the way micro-sam / torch-em store fine-tuned models."""
    path = tmp_path_factory.mktemp("sam") / "tiny_vit_b_lm.pt"
    state = {f"sam.{k}": v for k, v in build_tiny_sam().state_dict().items()}
    torch.save({"model_state": state, "epoch": 3}, path)
    return path


@pytest.fixture
def volume() -> MultiscaleVolume:
    data = blobs((6, 40, 50))
    return MultiscaleVolume("blobs", [ArrayVolume(data, (40.0, 4.0, 4.0), key="blobs-0")])


@pytest.fixture
def make_service(tiny_checkpoint):
    services = []

    def factory(**settings) -> SamService:
        settings.setdefault("models", (ModelSpec("tiny", "vit_b", tiny_checkpoint),))
        settings.setdefault("device", "cpu")
        service = SamService(SamSettings(**settings))
        services.append(service)
        return service

    yield factory
    for service in services:
        service.close()


@pytest.fixture(scope="session")
def tiny_decoder_checkpoint(tmp_path_factory) -> Path:
    """A tiny SAM with a random micro-sam UNETR instance decoder, stored as micro-sam does."""
    from micro_sam.instance_segmentation import get_unetr

    sam = build_tiny_sam()
    unetr = get_unetr(sam.image_encoder, device="cpu")
    decoder = {k: v for k, v in unetr.state_dict().items() if not k.startswith("encoder")}
    path = tmp_path_factory.mktemp("sam") / "tiny_vit_b_lm_decoder.pt"
    torch.save({"model_state": {f"sam.{k}": v for k, v in sam.state_dict().items()},
                "decoder_state": decoder}, path)
    return path
