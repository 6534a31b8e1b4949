"""Projects: the Python API a user scripts, and the server serves.

A project is a folder::

    project.json          source, classes and colours, feature selection, generation
    labels/               the label store's edit log and checkpoint
    instances/            the instance objects' edit log and checkpoint
    classifiers/gN.pkl    the classifier of the latest generation N

Example
-------
>>> p = Project.create("my-project", source="/data/cells.ome.zarr")  # doctest: +SKIP
>>> p.add_class("membrane"); p.add_class("background")                # doctest: +SKIP
>>> p.paint(Stroke(((10.5, 40.5, 40.5), (10.5, 60.5, 80.5)), radius=2, label=1))  # +SKIP
>>> p.train()                                                          # doctest: +SKIP
>>> proba = p.predict(Box((10, 0, 0), (11, 256, 256)))                 # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import filters
from ilastik_web.abc import Box, MultiscaleVolume
from ilastik_web.cache import ArrayCache
from ilastik_web.cancel import Cancelled
from ilastik_web.classify.features import (
    FeatureComputer,
    TrainingSamples,
    gather_training_samples,
)
from ilastik_web.classify.forest import MAX_TRAINING_SAMPLES, PixelClassifier, balanced_subsample
from ilastik_web.classify.live import LiveTrainer, TrainingStatus
from ilastik_web.classify.prediction import prediction_pyramids
from ilastik_web.errors import InvalidRequestError, NotFoundError, NotReadyError
from ilastik_web.labels import EditResult, LabelSnapshot, LabelStore, Stroke
from ilastik_web.listeners import Listeners
from ilastik_web.resources import NamespacedCache, Resources
from ilastik_web.sam.instances import InstanceEditResult, InstanceStore

log = logging.getLogger(__name__)

PROJECT_FILE = "project.json"
#: Key of a class deletion's edit meta in the label log: the deleted class.
DELETED_CLASS = "deleted_class"
FORMAT_VERSION = 1
# ilastik's default label colours, in order.
PALETTE = (
    "#ff0000", "#00ff00", "#ffff00", "#0000ff", "#ff00ff", "#808000",
    "#00ffff", "#ff8000", "#8000ff", "#008080", "#c08080", "#80c000",
)
# A moderate default: all six features at σ 1.0 and 3.5, plus fine smoothing. Enough to
# separate membranes, nuclei and background, with a halo small enough to stay live.
DEFAULT_SELECTION: tuple[tuple[str, float], ...] = (
    ("GaussianSmoothing", 0.7),
    ("GaussianSmoothing", 1.6),
    ("GaussianSmoothing", 3.5),
    ("LaplacianOfGaussian", 1.0),
    ("LaplacianOfGaussian", 3.5),
    ("GaussianGradientMagnitude", 1.0),
    ("GaussianGradientMagnitude", 3.5),
    ("DifferenceOfGaussians", 1.6),
    ("StructureTensorEigenvalues", 1.0),
    ("HessianOfGaussianEigenvalues", 1.0),
    ("HessianOfGaussianEigenvalues", 3.5),
)


@dataclass(frozen=True)
class LabelClass:
    value: int  # the label value painted, 1..255
    name: str
    color: str  # "#rrggbb"

    def to_json(self) -> dict:
        return {"value": self.value, "name": self.name, "color": self.color}


@dataclass(frozen=True)
class Generation:
    """One trained classifier and everything needed to serve its predictions."""

    number: int
    classifier: PixelClassifier
    computer: FeatureComputer
    pyramids: dict[str, MultiscaleVolume]


def _check_color(color: str) -> str:
    c = color.strip().lower()
    if len(c) != 7 or c[0] != "#" or any(ch not in "0123456789abcdef" for ch in c[1:]):
        raise InvalidRequestError(f"colour must look like #rrggbb, got {color!r}")
    return c


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Project:
    """Sources, label classes, feature selection, labels and the classifier.

    Use :meth:`create` or :meth:`open`. Thread-safe. Training runs either synchronously
    (:meth:`train`) or in the background after each change when ``live=True``.

    Parameters
    ----------
    directory
        The project folder, or None for a project held in memory only.
    source
        The raw data pyramid.
    source_location
        Where ``source`` was opened from (recorded so :meth:`open` can reopen it).
    feature_cache_bytes, prediction_cache_bytes
        Memory budgets of the project's own two caches, when no ``resources`` are given.
    resources
        The process's shared caches and threads (a server's): features and predictions
        then live in its ``features`` and ``predictions`` caches, training runs at
        background priority with its forest threads.
    """

    def __init__(
        self,
        directory: Path | None,
        source: MultiscaleVolume,
        *,
        source_location: str | None = None,
        voxel_size: Sequence[float] | None = None,
        classes: Sequence[LabelClass] = (),
        selection=DEFAULT_SELECTION,
        generation: int = 0,
        feature_cache_bytes: int = 2 << 30,
        prediction_cache_bytes: int = 512 << 20,
        live: bool = False,
        debounce_s: float = 0.25,
        uid: str | None = None,
        resources: Resources | None = None,
        feature_channels: Sequence[int] | None = None,
    ):
        # Part of every served URL: chunk URLs are cached forever, so versions of two
        # projects (or of a project deleted and made again) must never coincide.
        self.uid = uid or secrets.token_hex(4)
        self.directory = Path(directory) if directory is not None else None
        self.source = source
        self.source_location = source_location
        self.voxel_size_override = tuple(voxel_size) if voxel_size else None
        # _lock guards state and is never held across disk I/O (the event loop reads
        # through it); _persist_lock orders the writes of project.json and classifiers.
        # State that readers see (classes, the generation) is swapped by reference.
        self._lock = threading.RLock()
        self._persist_lock = threading.Lock()
        self._classes: dict[int, LabelClass] = {c.value: c for c in classes}
        self.resources = resources
        self.feature_cache: ArrayCache | NamespacedCache
        self.prediction_cache: ArrayCache | NamespacedCache
        if resources is not None:
            # Feature keys name the source and selection, so projects share them; keys of
            # predictions only name the generation, so each project has its namespace.
            self.feature_cache = resources.cache("features")
            self.prediction_cache = NamespacedCache(resources.cache("predictions"), self.uid)
        else:
            self.feature_cache = ArrayCache(feature_cache_bytes)
            self.prediction_cache = ArrayCache(prediction_cache_bytes)
        self._computer = FeatureComputer(source, selection, self.feature_cache,
                                         channels=feature_channels)
        self._samples = TrainingSamples()
        self._generation_number = generation
        self._generation: Generation | None = None
        self._listeners: Listeners[Callable[[str, dict], None]] = Listeners("project")
        labels_dir = self.directory / "labels" if self.directory is not None else None
        self.labels = LabelStore(source.base.shape, labels_dir)
        self._reconcile_deleted_classes()
        instances_dir = self.directory / "instances" if self.directory is not None else None
        #: Instance objects; their edits share the undo history of :meth:`undo`.
        self.instances = InstanceStore(source.base.shape, instances_dir,
                                       clock=lambda: self.labels.revision)
        self.instances.subscribe(lambda: self._notify(
            "instances", {"revision": self.instances.revision}))
        if self.directory is not None:
            self._load_classifier()
        self._trainer: LiveTrainer | None = None
        self._live_paused = False
        self._latest_edit: Box | None = None
        #: What an import (e.g. from an .ilp) could not carry over, one line each.
        self.import_notes: list[str] = []
        if live:
            self._trainer = LiveTrainer(
                self._train_step if resources is None else self._train_in_pool,
                debounce_s=debounce_s, on_status=self._on_training_status,
                generation=self._generation_number,
            )

    # -- construction --------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        directory: str | Path | None,
        source: str | MultiscaleVolume,
        *,
        voxel_size: Sequence[float] | None = None,
        allowed_roots: Sequence[Path] | None = None,
        classes: Sequence[str] = (),
        selection=DEFAULT_SELECTION,
        location: str | None = None,
        **kwargs,
    ) -> Project:
        """Make a new project folder for ``source`` (a location or an opened pyramid).

        ``location`` records where an already opened ``source`` came from, so
        :meth:`open` can reopen it without being handed the pyramid.
        """
        volume, opened_from = _resolve_source(source, voxel_size, allowed_roots)
        location = opened_from or location
        directory = Path(directory) if directory is not None else None
        if directory is not None:
            if (directory / PROJECT_FILE).exists():
                raise InvalidRequestError(f"{directory} already holds a project")
            directory.mkdir(parents=True, exist_ok=True)
        project = cls(directory, volume, source_location=location, voxel_size=voxel_size,
                      selection=selection, **kwargs)
        for name in classes:
            project.add_class(name)
        project.save()
        return project

    @classmethod
    def open(
        cls,
        directory: str | Path,
        *,
        source: MultiscaleVolume | None = None,
        allowed_roots: Sequence[Path] | None = None,
        **kwargs,
    ) -> Project:
        """Reopen a project folder (its source is opened again from the recorded location)."""
        directory = Path(directory)
        try:
            data = json.loads((directory / PROJECT_FILE).read_text())
        except FileNotFoundError:
            raise NotFoundError(f"no project at {directory}") from None
        except json.JSONDecodeError as exc:
            raise InvalidRequestError(f"{directory / PROJECT_FILE} is corrupt: {exc}") from None
        if data.get("format") != FORMAT_VERSION:
            raise InvalidRequestError(f"{directory} has unsupported format {data.get('format')}")
        location = data["source"]["location"]
        voxel_size = data["source"].get("voxel_size")
        if source is None:
            if location is None:
                raise InvalidRequestError(f"{directory}: the source was in memory; pass source=")
            source, _ = _resolve_source(location, voxel_size, allowed_roots)
        classes = [LabelClass(c["value"], c["name"], c["color"]) for c in data["classes"]]
        selection = [tuple(item) for item in data["features"]]
        kwargs.setdefault("feature_channels", data.get("feature_channels"))
        return cls(directory, source, source_location=location, voxel_size=voxel_size,
                   classes=classes, selection=selection, generation=data["generation"],
                   uid=data["uid"], **kwargs)

    def save(self) -> None:
        """Write project.json atomically and checkpoint the labels."""
        if self.directory is None:
            return
        self._save_metadata()
        self.labels.checkpoint()
        self.instances.checkpoint()

    def _save_metadata(self) -> None:
        """Write project.json (outside ``_lock``); the last writer writes the latest state."""
        if self.directory is None:
            return
        with self._persist_lock:
            with self._lock:
                data = self._to_json()
            _write_json_atomic(self.directory / PROJECT_FILE, data)

    def _to_json(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "uid": self.uid,
            "source": {"location": self.source_location, "voxel_size": self.voxel_size_override},
            "classes": [c.to_json() for c in self.classes],
            "features": [[s.feature_id, s.sigma, s.in_2d] for s in self.selection],
            "feature_channels": list(self.feature_channels),
            "generation": self._generation_number,
        }

    def close(self) -> None:
        if self._trainer is not None:
            self._trainer.close()
        self.labels.close()
        self.instances.close()

    # -- classes --------------------------------------------------------------------------

    @property
    def classes(self) -> list[LabelClass]:
        classes = self._classes  # replaced, never mutated: no lock needed to read
        return [classes[v] for v in sorted(classes)]

    def add_class(self, name: str, color: str | None = None) -> LabelClass:
        name = name.strip()
        if not name:
            raise InvalidRequestError("a class needs a name")
        with self._lock:
            # A value labels or undo history still refer to would silently join them.
            taken = set(self._classes) | self.labels.referenced_values()
            value = next((v for v in range(1, 256) if v not in taken), None)
            if value is None:
                raise InvalidRequestError("all 255 class values are in use (by classes, "
                                          "their labels or the undo history)")
            if color is None:
                color = PALETTE[(value - 1) % len(PALETTE)]
            cls = LabelClass(value, name, _check_color(color))
            self._classes = {**self._classes, value: cls}
        self._save_metadata()
        self._notify("classes", {"classes": [c.to_json() for c in self.classes]})
        return cls

    def update_class(self, value: int, *, name: str | None = None,
                     color: str | None = None) -> LabelClass:
        with self._lock:
            old = self._get_class(value)
            new = LabelClass(value, name.strip() if name else old.name,
                             _check_color(color) if color else old.color)
            self._classes = {**self._classes, value: new}
        self._save_metadata()
        self._notify("classes", {"classes": [c.to_json() for c in self.classes]})
        return new

    def remove_class(self, value: int, author: str | None = None) -> None:
        """Delete a class and erase its labels: one logged edit by ``author``, undone by
        :meth:`undo` (``author``'s undo, like their strokes).

        The edit log carries the class, so a crash between the label edit and the
        metadata write is completed on reopening (see ``_reconcile_deleted_classes``).
        """
        with self._lock:
            cls = self._get_class(value)
        result = self.labels.relabel(cls.value, 0, meta={DELETED_CLASS: cls.to_json()},
                                    author=author)
        with self._lock:
            self._classes = {v: c for v, c in self._classes.items() if v != cls.value}
        self._save_metadata()
        self._notify("classes", {"classes": [c.to_json() for c in self.classes]})
        self._labels_changed(result)

    def _reconcile_deleted_classes(self) -> None:
        """Make the classes agree with the class deletions in effect in the label log."""
        active, undone = self.labels.history()
        changed = False
        for edit in active:
            deleted = (edit.meta or {}).get(DELETED_CLASS)
            if deleted is not None and self._classes.pop(int(deleted["value"]), None):
                changed = True
        for edit in undone:
            changed |= self._restore_class((edit.meta or {}).get(DELETED_CLASS))
        if changed:
            log.warning("classes: completed a class deletion or its undo interrupted by a "
                        "crash")
            self._save_metadata()

    def _restore_class(self, data: dict | None) -> bool:
        if data is None or int(data["value"]) in self._classes:
            return False
        cls = LabelClass(int(data["value"]), str(data["name"]), _check_color(data["color"]))
        self._classes[cls.value] = cls
        return True

    def _class_edit_undone(self, result: EditResult, undone: bool) -> None:
        """After undo (or redo) of a class deletion: restore (or delete) the class."""
        deleted = ((result.edit.meta or {}) if result.edit else {}).get(DELETED_CLASS)
        if deleted is None:
            return
        with self._lock:
            if undone:
                changed = self._restore_class(deleted)
            else:
                changed = self._classes.pop(int(deleted["value"]), None) is not None
            if changed:
                self._save_metadata()
        if changed:
            self._notify("classes", {"classes": [c.to_json() for c in self.classes]})

    def _get_class(self, value: int) -> LabelClass:
        try:
            return self._classes[int(value)]
        except (KeyError, ValueError):
            raise NotFoundError(f"no class with value {value}") from None

    # -- features ---------------------------------------------------------------------------

    @property
    def selection(self) -> tuple[filters.FeatureSpec, ...]:
        return self._computer.selection

    def set_selection(self, selection) -> None:
        """Change the feature selection; the next training uses it."""
        computer = FeatureComputer(self.source, selection, self.feature_cache,
                                   channels=self._computer.channels)
        with self._lock:
            self._computer = computer
        self._save_metadata()
        self._notify("features", {"features": [[s.feature_id, s.sigma, s.in_2d]
                                               for s in computer.selection]})
        self._request_training()

    @property
    def feature_channels(self) -> tuple[int, ...]:
        """The source's channels that feed the features (all by default)."""
        return self._computer.channels

    def set_feature_channels(self, channels: Sequence[int] | None) -> None:
        """Choose the input channels of the features (None: all); the next training,
        its predictions and batch exports use only them.

        Raises
        ------
        InvalidRequestError
            Empty, repeated or out-of-range channels.
        """
        try:
            computer = FeatureComputer(self.source, self._computer.selection,
                                       self.feature_cache, channels=channels)
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from None
        with self._lock:
            self._computer = computer
        self._save_metadata()
        self._notify("features", {"features": [[s.feature_id, s.sigma, s.in_2d]
                                               for s in computer.selection],
                                  "channels": list(computer.channels)})
        self._request_training()

    @property
    def feature_names(self) -> tuple[str, ...]:
        """ilastik's names of the feature channels of the current selection, in order."""
        return tuple(self._computer.channel_names)

    def feature_importances(self) -> dict[str, float]:
        """Importance of each feature channel in the current classifier."""
        return self.current_generation().classifier.feature_importances()

    # -- labels -----------------------------------------------------------------------------

    def paint(self, stroke: Stroke, author: str | None = None) -> EditResult:
        """Apply a stroke by ``author``; durable once this returns. Its class must exist
        (0 erases)."""
        if stroke.label != 0 and stroke.label not in self._classes:
            raise InvalidRequestError(f"no class with value {stroke.label}; add it first")
        result = self.labels.paint(stroke, author=author)
        self._labels_changed(result)
        return result

    def paint_mask(self, box: Box, mask: np.ndarray, label: int,
                   author: str | None = None) -> EditResult:
        """Set the voxels of a boolean ``mask`` shaped like ``box`` (z, y, x) to class
        ``label`` (0 erases); durable once this returns, undoable like a stroke.
        """
        if label != 0:
            self._get_class(label)
        result = self.labels.paint_mask(box, mask, label, author=author)
        self._labels_changed(result)
        return result

    def undo(self, author: str | None = None) -> EditResult | InstanceEditResult | None:
        """Undo the latest edit (``author``'s latest, when given), of the labels or of the
        instance objects (:attr:`instances`), whichever came last."""
        with self._lock:
            if self._history_target(author, redo=False) == "instances":
                return self.instances.undo(author)
            result = self.labels.undo(author)
            if result is not None:
                self._class_edit_undone(result, undone=True)
        if result is not None:
            self._labels_changed(result)
        return result

    def redo(self, author: str | None = None) -> EditResult | InstanceEditResult | None:
        """Redo the latest undone edit (``author``'s latest, when given), labels or
        instances. A newer edit by the same author ends the redo history, of both."""
        with self._lock:
            target = self._history_target(author, redo=True)
            if target is None:
                return None
            if target == "instances":
                return self.instances.redo(author)
            result = self.labels.redo(author)
            if result is not None:
                self._class_edit_undone(result, undone=False)
        if result is not None:
            self._labels_changed(result)
        return result

    def can_undo_by(self, author: str | None) -> bool:
        return self._history_target(author, redo=False) is not None

    def can_redo_by(self, author: str | None) -> bool:
        return self._history_target(author, redo=True) is not None

    def _history_target(self, author: str | None, *, redo: bool) -> str | None:
        """Which store :meth:`undo` (or :meth:`redo`) acts on: "labels", "instances", None.

        An instance edit's key is the label revision when it was made, so it came after a
        label edit of revision r when key >= r. Undo takes the later of the two latest
        edits; redo the earlier of the two latest undone ones (undos go backwards), and
        only one no edit of the same author has followed since, in the other store.
        """
        active, undone = self.labels.history()

        def mine(edits):
            return [e for e in edits if author is None or e.author == author]

        labels_active, labels_undone = mine(active), mine(undone)
        inst_active, inst_undone = (mine(e) for e in self.instances.history())
        if not redo:
            label, inst = (labels_active or [None])[-1], (inst_active or [None])[-1]
            if inst is None:
                return "labels" if label is not None else None
            if label is None or inst.key >= label.revision:
                return "instances"
            return "labels"
        label, inst = (labels_undone or [None])[-1], (inst_undone or [None])[-1]
        if label is not None and any(label.revision <= e.key for e in inst_active):
            label = None
        if inst is not None and any(inst.key < e.revision for e in labels_active):
            inst = None
        if inst is None:
            return "labels" if label is not None else None
        if label is None or inst.key < label.revision:
            return "instances"
        return "labels"

    def _labels_changed(self, result: EditResult) -> None:
        self._latest_edit = result.box
        self._notify("labels", {"revision": result.revision,
                                "box": [list(result.box.start), list(result.box.stop)]})
        self._request_training()

    def _request_training(self) -> None:
        if self._trainer is not None and not self._live_paused:
            self._trainer.request()

    @property
    def live_updates(self) -> bool:
        """Whether changes retrain in the background (only for projects made with live=True)."""
        return self._trainer is not None and not self._live_paused

    def set_live_updates(self, enabled: bool) -> None:
        """Pause or resume background retraining; resuming trains on what changed meanwhile."""
        if self._trainer is None:
            raise InvalidRequestError("this project was opened without live training")
        was_paused = self._live_paused
        self._live_paused = not enabled
        self._notify("live", {"enabled": enabled})
        if enabled and was_paused:
            self._trainer.request()

    # -- training ---------------------------------------------------------------------------

    def train(self) -> int:
        """Train now on the current labels and selection; return the new generation."""
        generation = self._train_step(lambda: False, lambda *a: None)
        if generation is None:
            raise InvalidRequestError("training needs labels of at least two classes")
        return generation

    def wait_for_training(self, timeout: float = 120.0) -> TrainingStatus:
        """With live training: block until pending changes are trained on."""
        if self._trainer is None:
            raise InvalidRequestError("live training is off for this project")
        return self._trainer.wait_idle(timeout)

    @property
    def training_status(self) -> TrainingStatus:
        if self._trainer is not None:
            return self._trainer.status
        return TrainingStatus(generation=self._generation_number)

    @property
    def training_pending(self) -> bool:
        """A live training of newer labels is waiting or running: the current generation's
        predictions are about to be replaced."""
        return self.live_updates and self._trainer is not None and self._trainer.pending

    def _train_in_pool(self, should_stop: Callable[[], bool],
                       report: Callable[[str, float, str], None]) -> int | None:
        """One live training as a task of the resources' training lane (the live trainer's
        thread only debounces): it ranks above chunks it will make outdated, and a training
        superseded while it waited is dropped, not run."""
        assert self.resources is not None
        future = self.resources.training.submit_task(
            lambda: self._train_step(should_stop, report), stale=should_stop)
        try:
            return future.result()
        except (Cancelled, CancelledError):  # superseded, or the pool shut down
            return None

    def _train_step(self, should_stop: Callable[[], bool],
                    report: Callable[[str, float, str], None]) -> int | None:
        # Read before the labels: the changes noted so far are in the snapshot.
        ticket = self._trainer.request_count if self._trainer is not None else None
        snapshot: LabelSnapshot = self.labels.snapshot()
        with self._lock:
            computer = self._computer
            label_values = [c.value for c in self.classes]
        report("features", 0.0, "")
        X, y = gather_training_samples(computer, snapshot, should_stop=should_stop,
                                       samples=self._samples)
        if should_stop():
            return None
        y_known = np.isin(y, label_values)
        X, y = X[y_known], y[y_known]
        if len(np.unique(y)) < 2:
            return None
        labelled = len(y)
        # Beyond MAX_TRAINING_SAMPLES voxels a forest learns little more but trains ever
        # longer: a class-balanced, seeded subsample keeps retraining live. Seeded by
        # nothing but the labels, so the same labels (an undo and redo) keep their trees.
        keep = balanced_subsample(y, MAX_TRAINING_SAMPLES, seed=0)
        X, y = X[keep], y[keep]
        report("training", 0.5, f"{labelled} labelled voxels"
               + (f", {len(y)} sampled" if len(y) < labelled else ""))
        classifier = PixelClassifier.train(
            X, y, label_values=label_values, feature_names=computer.channel_names,
            should_stop=should_stop,
            previous=self._generation.classifier if self._generation is not None else None,
            n_jobs=self.resources.forest_threads if self.resources is not None else None,
        )
        return self._publish(classifier, computer, ticket)

    def adopt_classifier(self, classifier: PixelClassifier) -> int:
        """Serve an already trained classifier (e.g. one imported from an ``.ilp``) as a new
        generation, until the next training replaces it.

        Raises
        ------
        InvalidRequestError
            Its feature channels are not the project's current ones.
        """
        with self._lock:
            computer = self._computer
        if tuple(classifier.feature_names) != tuple(computer.channel_names):
            raise InvalidRequestError("the classifier's features are not the project's selection")
        return self._publish(classifier, computer)

    def _publish(self, classifier: PixelClassifier, computer: FeatureComputer,
                 ticket: int | None = None) -> int:
        # The classifier is on disk before its generation is served: a restart never
        # points at a generation whose classifier is missing. Only trainings publish,
        # one at a time, so the number taken here stays ours.
        with self._persist_lock:
            number = self._generation_number + 1
            if self.directory is not None:
                folder = self.directory / "classifiers"
                folder.mkdir(exist_ok=True)
                classifier.save(folder / f"g{number}.pkl")
            generation = Generation(
                number, classifier, computer,
                prediction_pyramids(classifier, computer, number, self.prediction_cache,
                                    threads=self._predict_threads),
            )
            with self._lock:
                self._generation = generation
                self._generation_number = number
            if ticket is not None and self._trainer is not None:
                # Its chunks are current from now on, not work a pending training replaces.
                self._trainer.served(ticket)
        self._wake_pool()
        self._save_metadata()
        if self.directory is not None:
            for old in (self.directory / "classifiers").glob("g*.pkl"):
                if old.name != f"g{number}.pkl":
                    old.unlink(missing_ok=True)
        # Old generations' predictions will never be asked for again (their URLs 410).
        self.prediction_cache.discard(lambda key: f"/g{number}/" not in str(key[0]))
        self._notify("generation", {"generation": number})
        return number

    def _load_classifier(self) -> None:
        assert self.directory is not None
        path = self.directory / "classifiers" / f"g{self._generation_number}.pkl"
        if not path.exists():
            return
        classifier = PixelClassifier.load(path)
        computer = self._computer
        if tuple(classifier.feature_names) != tuple(computer.channel_names):
            log.warning("saved classifier does not match the feature selection; retrain needed")
            return
        self._generation = Generation(
            self._generation_number, classifier, computer,
            prediction_pyramids(classifier, computer, self._generation_number,
                                self.prediction_cache, threads=self._predict_threads),
        )

    # -- prediction --------------------------------------------------------------------------

    @property
    def _predict_threads(self) -> int | None:
        """Threads of one served box's prediction: the resources' (chunks are predicted
        side by side, one per worker), else the forest's own ``n_jobs``."""
        return self.resources.predict_threads if self.resources is not None else None

    @property
    def generation(self) -> int:
        """The latest classifier generation (0 before the first training)."""
        return self._generation_number

    def shows_latest_edit(self, box: Box) -> bool:
        """Whether ``box`` (level-0 voxels) lies in the plane of the latest label edit:
        the slab its box spans along its thinnest axis, i.e. the view it was painted in,
        which is what its author watches for the new predictions."""
        edit = self._latest_edit  # swapped by reference
        if edit is None:
            return False
        axis = int(np.argmin(edit.shape))
        return box.start[axis] < edit.stop[axis] and edit.start[axis] < box.stop[axis]

    def current_generation(self) -> Generation:
        generation = self._generation  # swapped by reference
        if generation is None:
            raise NotReadyError("no classifier yet: paint at least two classes")
        return generation

    def predict(self, box: Box, *, level: int = 0) -> np.ndarray:
        """float32 probabilities (classes, z, y, x) of ``box`` at pyramid ``level``."""
        generation = self.current_generation()
        features = generation.computer.features(level, box)
        return generation.classifier.predict_proba(features)

    # -- events -------------------------------------------------------------------------------

    def subscribe(self, listener: Callable[[str, dict], None]) -> Callable[[], None]:
        """Call ``listener(kind, payload)`` on every change; returns an unsubscribe function.

        Kinds: "labels", "classes", "features", "generation", "training", "live",
        "instances" (any change of :attr:`instances`).
        """
        return self._listeners.subscribe(listener)

    def _on_training_status(self, status: TrainingStatus) -> None:
        self._wake_pool()
        self._notify("training", status.to_json())

    def _wake_pool(self) -> None:
        """Whether a training is pending decides which queued chunks are outdated: the
        pool's idle workers look again when that may have changed."""
        if self.resources is not None:
            self.resources.pool.wake()

    def _notify(self, kind: str, payload: dict) -> None:
        self._listeners.call(kind, payload)


def _resolve_source(source, voxel_size, allowed_roots) -> tuple[MultiscaleVolume, str | None]:
    if isinstance(source, MultiscaleVolume):
        return source, None
    from ilastik_web.sources import open_source

    location = str(source)
    volume = open_source(
        location,
        voxel_size=tuple(voxel_size) if voxel_size else None,
        allowed_roots=allowed_roots,
    )
    return volume, location
