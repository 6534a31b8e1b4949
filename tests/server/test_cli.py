"""The ``ilastik-web`` command line: options, errors, and a real server process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import tifffile

from ilastik_web.cli import build_parser, main


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ["--host", "--port", "--no-browser", "--token", "--allow-root",
                   "--voxel-size", "--memory", "--threads", "--cache-mb", "--workers",
                   "--log-level"]:
        assert option in text
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]
    assert all(action.help for action in serve._actions)


def test_bad_path_is_one_line_and_exit_2(capsys, tmp_path):
    code = main(["serve", str(tmp_path / "missing.zarr"), "--no-browser"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("ilastik-web: error:") and "missing.zarr" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_bad_collection_is_one_line_and_exit_2(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "missing", tmp_path / "empty"):
        code = main(["serve", "--collection", str(folder), "--no-browser"])
        assert code == 2
        err = capsys.readouterr().err
        assert err.startswith("ilastik-web: error: --collection:") and str(folder) in err
        assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--voxel-size", "1,2"], ["--voxel-size", "a,b,c"],
                                  ["--port", "70000"], ["--cache-mb", "0"],
                                  ["--memory", "0"], ["--memory", "lots"], ["--threads", "0"]])
def test_bad_options_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *argv])
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_serve_prints_viewer_url_and_serves(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, size=(8, 40, 50), dtype=np.uint8)
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, data)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ilastik_web", "serve", str(path), "--port", str(port),
         "--no-browser", "--voxel-size", "30,5,5", "--token", "tok", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url == f"http://127.0.0.1:{port}/v/main/?token=tok"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/sources", headers={"Authorization": "Bearer tok"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            (source,) = json.load(response)["sources"]
        assert source["shape_zyx"] == [8, 40, 50]
        assert source["voxel_size_nm_zyx"] == [30.0, 5.0, 5.0]
    finally:
        process.terminate()
        process.wait(10)
