"""Loading checkpoints through the real code: plain SAM and micro-sam formats, bad files."""

from __future__ import annotations

import pytest
import torch
from sam_fixtures import TINY_IMAGE_SIZE, build_tiny_sam

from ilastik_web.errors import InvalidRequestError, NotFoundError, NotReadyError
from ilastik_web.sam import ModelRegistry, ModelSpec, choose_device, load_model
from ilastik_web.sam.models import infer_vit_architecture


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("fixture, model_type", [("tiny_checkpoint", "vit_b"),
                                                 ("tiny_microsam_checkpoint", "vit_b_lm")])
def test_checkpoints_load_with_their_weights(request, fixture, model_type):
    path = request.getfixturevalue(fixture)
    loaded = load_model(ModelSpec("m", model_type, path), device="cpu")
    assert loaded.device == "cpu"
    assert loaded.image_size == TINY_IMAGE_SIZE
    assert len(loaded.model_hash) == 32
    assert _same_weights(loaded.sam, build_tiny_sam())


def test_architecture_is_read_from_the_weights():
    arch = infer_vit_architecture(build_tiny_sam().state_dict())
    assert (arch.embed_dim, arch.depth, arch.num_heads) == (64, 2, 2)
    assert arch.global_attn_indexes == (1,) and arch.window_size == 4
    assert arch.image_size == TINY_IMAGE_SIZE and arch.out_chans == 64


def test_missing_checkpoint_is_not_ready_and_names_the_file(tmp_path):
    missing = tmp_path / "vit_b_lm.pt"
    registry = ModelRegistry([ModelSpec("lm", "vit_b_lm", missing)])
    with pytest.raises(NotReadyError, match="vit_b_lm.pt"):
        registry.get("lm")
    assert registry.describe()[0]["available"] is False
    with pytest.raises(NotFoundError):
        registry.get("nope")
    with pytest.raises(NotReadyError):
        ModelRegistry().get()


def test_unusable_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidRequestError):
        load_model(ModelSpec("g", "vit_b", garbage), device="cpu")
    partial = tmp_path / "partial.pt"
    state = build_tiny_sam().state_dict()
    del state["mask_decoder.iou_token.weight"]
    torch.save(state, partial)
    with pytest.raises(InvalidRequestError, match="weights do not fit"):
        load_model(ModelSpec("p", "vit_b", partial), device="cpu")


def test_vit_t_without_mobile_sam_is_not_ready(tiny_checkpoint):
    pytest.importorskip("segment_anything")
    try:
        import mobile_sam  # noqa: F401
        pytest.skip("mobile_sam is installed")
    except ImportError:
        pass
    with pytest.raises(NotReadyError, match="mobile_sam"):
        load_model(ModelSpec("t", "vit_t", tiny_checkpoint), device="cpu")


@pytest.mark.parametrize("text, expected", [
    ("vit_b:/m/b.pt", ("vit_b", "vit_b", "/m/b.pt")),
    ("lm=vit_l_lm:/m/l.pt", ("lm", "vit_l_lm", "/m/l.pt")),
])
def test_model_spec_parsing(text, expected):
    spec = ModelSpec.parse(text)
    assert (spec.name, spec.model_type, str(spec.checkpoint)) == expected


@pytest.mark.parametrize("text", ["vit_b", "vit_x:/a.pt", "=vit_b:"])
def test_bad_model_specs(text):
    with pytest.raises(InvalidRequestError):
        ModelSpec.parse(text)


def test_device_choice():
    assert choose_device("cpu") == "cpu"
    assert choose_device() == ("cuda" if torch.cuda.is_available() else "cpu")
