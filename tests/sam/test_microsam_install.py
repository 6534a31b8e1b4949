"""micro-sam is installed headless: its modules we use import without napari or Qt."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("micro_sam")

GUI_PACKAGES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui",
                "superqt", "vispy")


def test_micro_sam_modules_import_without_a_gui():
    script = (
        "import json, sys\n"
        "import micro_sam, micro_sam.training, micro_sam.automatic_segmentation\n"
        "import micro_sam.multi_dimensional_segmentation, micro_sam.instance_segmentation\n"
        "gui = sorted({m.split('.')[0] for m in sys.modules} & set(json.loads(sys.argv[1])))\n"
        "print(json.dumps({'version': micro_sam.__version__, 'gui': gui}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, json.dumps(GUI_PACKAGES)],
                         capture_output=True, text=True, check=True,
                         env={"QT_QPA_PLATFORM": "", "DISPLAY": "", "PATH": "/usr/bin:/bin"})
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["version"].startswith("1.8.")
    assert found["gui"] == []
