"""Helpers shared by the SAM tests: a tiny random SAM and blob images.

The model is built here with segment-anything's own modules (not our loader), so loading
it back exercises the real checkpoint reading and architecture inference.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch

TINY_IMAGE_SIZE = 256


def build_tiny_sam(seed: int = 0, image_size: int = TINY_IMAGE_SIZE):
    """Embed dim 64, depth 2 (block 1 global), 2 heads, window 4; SAM's decoder, 64 wide."""
    from segment_anything.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(seed)
    grid = image_size // 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=image_size, patch_size=16, embed_dim=64, depth=2, num_heads=2,
            mlp_ratio=4.0, out_chans=64, qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True,
            window_size=4, global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(embed_dim=64, image_embedding_size=(grid, grid),
                                     input_image_size=(image_size, image_size),
                                     mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=64, mlp_dim=2048, num_heads=8),
            transformer_dim=64, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
    ).eval()



def blobs(shape_zyx, seed: int = 0) -> np.ndarray:
    """Bright ellipsoids on a dark noisy background, uint8 (1, z, y, x)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape_zyx, dtype=np.float32)
    image = rng.normal(30, 5, size=shape_zyx)
    for _ in range(4):
        c = [rng.uniform(0.2, 0.8) * s for s in shape_zyx]
        r = [max(2.0, rng.uniform(0.1, 0.25) * s) for s in shape_zyx]
        inside = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
        image[inside <= 1] += 150
    return np.clip(image, 0, 255).astype(np.uint8)[None]


def write_training_set(tmp_path, items: int = 3, shape=(56, 60)):
    """A collection of ``items`` blob images annotated by thresholding, exported as a
    tiff-layout training set; returns the set's folder."""
    import tifffile
    from scipy import ndimage

    from ilastik_web.collections import Collection, ItemAnnotation
    from ilastik_web.collections.trainingset import export_training_set

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(items):
        tifffile.imwrite(folder / f"img{i}.tif", blobs((1, *shape), seed=i)[0, 0])
    collection = Collection.from_folder(folder)
    for i in range(items):
        image = blobs((1, *shape), seed=i)[0]
        labels = ndimage.label(image > 100)[0].astype(np.uint32)
        ids = [int(v) for v in np.unique(labels) if v]
        collection.save(f"img{i}", ItemAnnotation(labels, {v: "cell" for v in ids},
                                                  {v: "sam" for v in ids}))
    out = tmp_path / "set"
    export_training_set(collection, out, layout="tiff", val_fraction=0.34)
    return out
