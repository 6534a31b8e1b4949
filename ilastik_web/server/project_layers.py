"""A project's labels and predictions as served, versioned layers.

Versions carry the label revision or classifier generation and the project's uid, so a
chunk URL means the same bytes forever (browsers cache them as immutable).
"""

from __future__ import annotations

import logging
import re
import threading

from ilastik_web.abc import Box, MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.errors import GoneError, NotFoundError, NotReadyError
from ilastik_web.labels import LabelVolume
from ilastik_web.labels.outline import outline_pyramid
from ilastik_web.project import Project
from ilastik_web.pyramid import build_pyramid
from ilastik_web.server.display import LayerDisplay
from ilastik_web.server.layers import ServedLayer

log = logging.getLogger(__name__)

PREDICTION_OUTPUTS = ("probabilities", "segmentation", "uncertainty")
#: Appended to the labels layer's version: the same labels drawn as outlines.
OUTLINE_VARIANT = "-outline"


def _parse_version(version: str, letter: str, uid: str) -> int:
    match = re.fullmatch(rf"{letter}([0-9]{{1,18}})-([0-9a-f]+)", version)
    if match is None or match.group(2) != uid:
        raise NotFoundError(f"unknown version {version!r}")
    return int(match.group(1))


def probability_shader(colors: list[str]) -> str:
    """GLSL mixing each class's colour by its probability (uint8 channels)."""
    controls = [f'#uicontrol vec3 class{i} color(default="{c}")' for i, c in enumerate(colors)]
    terms = [f"  rgb += toNormalized(getDataValue({i})) * class{i};" for i in range(len(colors))]
    return "\n".join(
        [*controls, "void main() {", "  vec3 rgb = vec3(0.0);", *terms, "  emitRGB(rgb);", "}", ""]
    )


UNCERTAINTY_SHADER = """#uicontrol invlerp normalized(range=[0, 255])
void main() {
  float u = normalized();
  emitRGBA(vec4(u, 0.5 * u, 1.0 - u, u));
}
"""


class LabelLayer(ServedLayer):
    """The project's training labels, a segmentation layer in class colours.

    Each version also comes as outlines (:data:`OUTLINE_VARIANT` appended), which a viewer
    shows by pointing the layer there; new revisions keep the viewer's variant.
    """

    variants = (OUTLINE_VARIANT,)

    def __init__(self, project: Project, cache: ArrayCache, layer_id: str = "labels"):
        super().__init__(layer_id, "segmentation", name="labels")
        self.project = project
        self.cache = cache
        self._lock = threading.Lock()
        self._built: tuple[int, MultiscaleVolume] | None = None
        self._outline: tuple[MultiscaleVolume, MultiscaleVolume] | None = None
        project.subscribe(self._on_project_event)

    @property
    def version(self) -> str:
        return f"r{self.project.labels.revision}-{self.project.uid}"

    def volume(self, version: str) -> MultiscaleVolume:
        if not version.endswith(OUTLINE_VARIANT):
            return self._filled(version)
        filled = self._filled(version[: -len(OUTLINE_VARIANT)])
        with self._lock:
            if self._outline is None or self._outline[0] is not filled:
                self._outline = (filled, outline_pyramid(filled))
            return self._outline[1]

    def _filled(self, version: str) -> MultiscaleVolume:
        revision = _parse_version(version, "r", self.project.uid)
        with self._lock:
            built = self._built
            if built is not None and built[0] == revision == self.project.labels.revision:
                return built[1]  # built from a snapshot of exactly this revision
            # The snapshot is taken first and its own revision checked: a revision read
            # apart from it could be followed by an edit before the snapshot, and chunks
            # under rN would then hold N+1 (with immutable cache headers).
            snapshot = self.project.labels.snapshot()
            if revision < snapshot.revision:
                raise GoneError(f"label revision {revision} was superseded by "
                                f"{snapshot.revision}")
            if revision > snapshot.revision:
                raise NotFoundError(f"label revision {revision} does not exist yet")
            base = LabelVolume(snapshot, self.project.source.base.voxel_size,
                               key_prefix=f"labels-{self.project.uid}")
            pyramid = build_pyramid(base, cache=self.cache, name="labels", method="mode")
            self._built = (snapshot.revision, pyramid)
            return pyramid

    @property
    def display(self) -> LayerDisplay:
        colors = {c.value: c.color for c in self.project.classes}
        return LayerDisplay(segment_colors=colors, opacity=0.8, on_top=True)

    def _on_project_event(self, kind: str, payload: dict) -> None:
        if kind in ("labels", "classes"):
            self._notify_changed()


class PredictionLayer(ServedLayer):
    """Probabilities, simple segmentation or uncertainty of the latest classifier."""

    def __init__(self, project: Project, output: str, layer_id: str | None = None):
        if output not in PREDICTION_OUTPUTS:
            raise NotFoundError(f"unknown prediction output {output!r}")
        kind = "segmentation" if output == "segmentation" else "image"
        super().__init__(layer_id or output, kind, name=output)
        self.project = project
        self.output = output
        project.subscribe(self._on_project_event)

    @property
    def version(self) -> str:
        return f"g{self.project.generation}-{self.project.uid}"

    @property
    def ready(self) -> bool:
        return self.project.generation > 0

    def outdated(self) -> bool:
        return self.project.training_pending

    def chunk_priority(self, level: int, box: Box) -> int:
        # The plane just painted first: its author waits for it, and its features are
        # the ones the training just computed (still in the feature cache).
        if level == 0 and self.project.shows_latest_edit(box):
            return -1
        return level

    def volume(self, version: str) -> MultiscaleVolume:
        number = _parse_version(version, "g", self.project.uid)
        generation = self.project.current_generation()  # NotReadyError before the first
        if number < generation.number:
            raise GoneError(f"generation {number} was superseded by {generation.number}")
        if number > generation.number:
            raise NotReadyError(f"generation {number} is not trained yet")
        return generation.pyramids[self.output]

    @property
    def display(self) -> LayerDisplay:
        classes = self.project.classes
        if self.output == "probabilities":
            return LayerDisplay(shader=probability_shader([c.color for c in classes]),
                                opacity=0.5)
        if self.output == "segmentation":
            return LayerDisplay(segment_colors={c.value: c.color for c in classes},
                                opacity=0.5, visible=False)
        return LayerDisplay(shader=UNCERTAINTY_SHADER, opacity=0.6, visible=False)

    def _on_project_event(self, kind: str, payload: dict) -> None:
        if kind in ("generation", "classes"):
            self._notify_changed()


def export_display(export: str, volume: MultiscaleVolume, classes) -> LayerDisplay | None:
    """How a finished export shows: in the project's class colours, like the live
    prediction layers (None: the default display)."""
    colors = [c.color for c in classes]
    if export == "segmentation":
        return LayerDisplay(segment_colors={c.value: c.color for c in classes}, opacity=0.5)
    if export == "probabilities" and volume.base.num_channels == len(colors):
        return LayerDisplay(shader=probability_shader(colors), opacity=0.5)
    return None
