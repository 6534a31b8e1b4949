"""The projects one server serves, each with its label and prediction layers."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field

from ilastik_web.cache import ArrayCache
from ilastik_web.errors import InvalidRequestError, NotFoundError
from ilastik_web.project import Project
from ilastik_web.server.layers import LayerRegistry, ServedLayer
from ilastik_web.server.presence import Presence
from ilastik_web.server.project_layers import PREDICTION_OUTPUTS, LabelLayer, PredictionLayer

log = logging.getLogger(__name__)

_PROJECT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass
class ServedProject:
    """A project and the layers that show it."""

    project_id: str
    project: Project
    source_layer_id: str
    label_layer: LabelLayer
    prediction_layers: dict[str, PredictionLayer] = field(default_factory=dict)
    #: Who has the project open now.
    presence: Presence = field(default_factory=Presence)

    def layer_ids(self) -> dict[str, str]:
        ids = {"raw": self.source_layer_id, "labels": self.label_layer.layer_id}
        ids.update({name: layer.layer_id for name, layer in self.prediction_layers.items()})
        return ids


class ProjectHub:
    """Projects by id; adds each project's layers to the layer registry.

    Prediction layers are registered when the first classifier exists, so a viewer never
    shows a layer that could only answer "not ready".
    """

    def __init__(self, registry: LayerRegistry, cache: ArrayCache):
        self.registry = registry
        self.cache = cache
        self._lock = threading.Lock()
        self._projects: dict[str, ServedProject] = {}

    def add(self, project_id: str, project: Project, *, source_layer_id: str) -> ServedProject:
        if not _PROJECT_ID.match(project_id):
            raise InvalidRequestError(f"project id {project_id!r} must be 1-64 letters, digits, "
                                      "'_' or '-'")
        with self._lock:
            if project_id in self._projects:
                raise InvalidRequestError(f"a project with id {project_id!r} is already open")
            label_layer = LabelLayer(project, self.cache, layer_id=f"{project_id}-labels")
            served = ServedProject(project_id, project, source_layer_id, label_layer)
            self._projects[project_id] = served
        self.registry.add(label_layer)
        project.subscribe(lambda kind, payload: self._on_event(served, kind))
        if project.generation > 0:
            self._register_predictions(served)
        return served

    def get(self, project_id: str) -> ServedProject:
        with self._lock:
            served = self._projects.get(project_id)
        if served is None:
            raise NotFoundError(f"no project {project_id!r}")
        return served

    def list(self) -> list[ServedProject]:
        with self._lock:
            return list(self._projects.values())

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._projects)

    def projects_of_layer(self, layer_id: str) -> list[str]:
        """Ids of the projects that show ``layer_id`` (their source, labels, predictions
        or job outputs); empty for a layer of no project."""
        return [s.project_id for s in self.list()
                if layer_id in s.layer_ids().values()
                or layer_id.startswith(f"{s.project_id}-job-")
                or layer_id == f"project-{s.project_id}-sam-objects"]  # instance layer

    def close(self) -> None:
        for served in self.list():
            served.project.close()

    def _on_event(self, served: ServedProject, kind: str) -> None:
        if kind == "generation" and not served.prediction_layers:
            self._register_predictions(served)

    def _register_predictions(self, served: ServedProject) -> None:
        with self._lock:
            if served.prediction_layers:
                return
            layers = {
                output: PredictionLayer(served.project, output,
                                        layer_id=f"{served.project_id}-{output}")
                for output in PREDICTION_OUTPUTS
            }
            served.prediction_layers.update(layers)
        layer: ServedLayer
        for layer in layers.values():
            self.registry.add(layer)
