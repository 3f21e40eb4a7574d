"""`pip install` is enough: the wheel built from this repository, installed into a fresh virtual environment, runs
the command line, the lessons and the walkthrough from an empty folder outside the repository.

How (nothing is downloaded): the wheel is built with ``pip wheel --no-deps --no-build-isolation`` from a copy of the
files git lists (an in-tree build would leave build/ in the repository, whose stale files can slip into later
wheels). A new venv gets its own pip (ensurepip, offline) and installs the wheel with ``--no-deps`` before anything
else is visible to it; only then does a .pth file make this test venv's site-packages (torch, streamlit, nbclient,
...) importable after its own. The editable install of the repository is not active there (a path added by a .pth
line does not run that folder's .pth files), and every command runs from an empty folder with no PYTHONPATH, so the
varlite that runs is the wheel's: the first test checks ``varlite.__file__``.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from tests.browser_harness import free_port
from varlite import course

ROOT = Path(__file__).resolve().parents[1]
COMMAND_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the files git lists (tracked and new, not ignored): what the wheel is built from, and what the
    tests compare it with (a file added to the working tree meanwhile does not count)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    folder = tmp_path_factory.mktemp("source")
    for name in filter(None, listed):
        if (ROOT / name).is_file():             # a tracked file deleted in the working tree is not copied
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    """The wheel built from ``source``."""
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(dist), "-q"], check=True, timeout=COMMAND_TIMEOUT_S)
    (built,) = dist.glob("varlite-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed, then this venv's site-packages visible after its own."""
    folder = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=COMMAND_TIMEOUT_S)
    python = folder / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   timeout=COMMAND_TIMEOUT_S)
    own_site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                              capture_output=True, text=True).stdout.strip()
    (Path(own_site) / "base_venv.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return folder


@pytest.fixture(scope="module")
def env(venv, tmp_path_factory) -> dict[str, str]:
    """No PYTHONPATH, the new venv's bin first on PATH (the kernel of a notebook is its python), a temporary
    VARLITE_HOME, one CPU thread."""
    home = tmp_path_factory.mktemp("varlite_home")
    kept = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**kept, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "VARLITE_HOME": str(home),
            "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}


@pytest.fixture
def empty(tmp_path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def run(args: list, cwd: Path, env: dict, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run a command; it must exit 0 with no traceback."""
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0 and "Traceback" not in done.stderr, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done


def test_the_installed_varlite_is_the_wheels_and_installs_no_app_package(venv, env, empty):
    probe = ("import importlib.util, json, varlite; from varlite import course; "
             "print(json.dumps([varlite.__file__, importlib.util.find_spec('app') is None, "
             "str(course.course_folder('app')), str(course.course_folder('lessons'))]))")
    module, no_app, app, lessons = json.loads(run([venv / "bin" / "python", "-c", probe], empty, env).stdout)
    site_packages = Path(module).parents[1]
    assert Path(module).is_relative_to(venv) and not Path(module).is_relative_to(ROOT)
    assert no_app, "a top-level package `app` is importable in the fresh venv"
    assert Path(app) == site_packages / "varlite" / "_course" / "app"
    assert Path(lessons) == site_packages / "varlite" / "_course" / "lessons"


def files_under(folder: Path, patterns: tuple[str, ...] = ("**/*",)) -> set[str]:
    """The files matching ``patterns`` below ``folder``, as POSIX paths relative to it."""
    return {path.relative_to(folder).as_posix() for pattern in patterns for path in folder.glob(pattern)
            if path.is_file()}


def test_the_wheel_holds_every_module_and_data_file(source, wheel):
    """Every file of varlite/ and every module of app/ (as varlite/_course/app), the lessons' files that `varlite
    lessons` copies (as varlite/_course/lessons): a missing sub-package in pyproject.toml's explicit list, or a new
    kind of data file without its package-data pattern, fails here. Nothing lands outside varlite/."""
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"varlite/{name}" for name in files_under(source / "varlite")}
    expected |= {f"varlite/_course/app/{name}" for name in files_under(source / "app", ("**/*.py",))}
    expected |= {f"varlite/_course/lessons/{name}" for name in files_under(source / "lessons", course.LESSON_FILES)}
    assert sorted(expected - names) == []
    assert sorted(name for name in names if not name.startswith(("varlite/", "varlite-"))) == []
    metadata = zipfile.ZipFile(wheel).read("varlite-0.1.0.dist-info/METADATA").decode()
    for licence in ("LICENSE", "NOTICE"):       # the folder inside dist-info depends on the setuptools version
        assert f"License-File: {licence}" in metadata.splitlines()
        assert any(name.startswith("varlite-0.1.0.dist-info/") and name.endswith(f"/{licence}") for name in names)


def test_the_commands_run_from_an_empty_folder(venv, env, empty):
    varlite = venv / "bin" / "varlite"
    assert "generate" in run([varlite, "--help"], empty, env).stdout
    for model in ("shapes", "cifar10"):
        run([varlite, "generate", "--model", model, "--class", "0", "--n", "2", "--out", f"{model}.png"], empty, env)
        with Image.open(empty / f"{model}.png") as grid:
            assert grid.format == "PNG" and grid.width > grid.height      # one row of two images
    run([varlite, "figure", "--model", "shapes", "--class", "0", "--out", "s.gif"], empty, env)
    with Image.open(empty / "s.gif") as gif:
        assert gif.n_frames > 1
    run([varlite, "figure", "--model", "shapes", "--class", "0", "--out", "s.html"], empty, env)
    assert (empty / "s.html").read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")


def test_the_lessons_are_copied_and_the_capstone_runs_from_the_copy(source, venv, env, empty):
    """`varlite lessons DIR` copies what the lessons read (lesson 12's logs included); lesson 10 runs there, headless,
    on the reference set inside the installed package."""
    run([venv / "bin" / "varlite", "lessons", "course"], empty, env)
    copied = files_under(empty / "course")
    assert copied == files_under(source / "lessons", course.LESSON_FILES) and "data/reproduce/summary.json" in copied
    where = run([venv / "bin" / "python", "-c", "from varlite.exercises import lesson10; "
                 "print(lesson10.REFERENCE_DIR)"], empty, env).stdout.strip()
    assert Path(where).is_relative_to(venv)
    execute = ("import sys, nbformat; from nbclient import NotebookClient; "
               "nb = nbformat.read(sys.argv[1], as_version=4); "
               "NotebookClient(nb, timeout=300, kernel_name='python3').execute(); "
               "nbformat.write(nb, sys.argv[1])")
    notebook = empty / "course" / "10_capstone_your_var.ipynb"
    run([venv / "bin" / "python", "-c", execute, notebook], empty / "course", {**env, "VARLITE_CI": "1"})
    text = notebook.read_text()
    assert '"output_type": "error"' not in text and "NOT ATTEMPTED" in text


def test_the_walkthrough_starts_and_renders_from_the_installed_files(venv, env, empty):
    """`varlite app --server.port N --server.headless true` serves (health endpoint and the page's HTML); the
    installed app's first page renders without an exception (Streamlit's AppTest, with the same sys.path as
    `varlite app` gives the server)."""
    port = free_port()
    server = subprocess.Popen([str(venv / "bin" / "varlite"), "app", "--server.port", str(port),
                               "--server.headless", "true", "--server.address", "127.0.0.1"],
                              cwd=empty, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, health = time.monotonic() + 90, None
        while health != "ok" and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.5)
            try:
                health = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5).read().decode()
            except OSError:
                pass
        assert health == "ok", f"no health answer in 90 s (exit code {server.poll()})"
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
        assert '<div id="root">' in page
    finally:
        server.terminate()      # on POSIX `varlite app` became the Streamlit server (os.execv): this stops it
        output = server.communicate(timeout=30)[0]
    assert "Traceback" not in output, output

    render = ("import sys; from varlite import course; app = course.course_folder('app'); "
              "sys.path.insert(0, str(app.parent)); "
              "from streamlit.testing.v1 import AppTest; "
              "at = AppTest.from_file(str(app / 'streamlit_app.py'), default_timeout=240).run(); "
              "assert not at.exception, [e.value for e in at.exception]; "
              "print([t.value for t in at.title])")
    titles = run([venv / "bin" / "python", "-c", render], empty, env).stdout
    assert "Generate" in titles


def test_varlite_app_passes_the_projects_streamlit_settings():
    """The settings `varlite app` gives Streamlit are those of .streamlit/config.toml (read by Streamlit only when
    it starts in the repository root)."""
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    from_file = {f"--{section}.{key}": str(value).lower() for section, options in config.items()
                 for key, value in options.items()}
    flags = course.STREAMLIT_SETTINGS
    assert dict(zip(flags[::2], flags[1::2])) == from_file


def test_varlite_app_hands_unknown_arguments_to_streamlit_and_other_commands_refuse_them(monkeypatch, capsys):
    from varlite.cli import main
    handed = []
    monkeypatch.setattr(course, "start_app", lambda streamlit_args: handed.append(streamlit_args) or 0)
    assert main(["app", "--server.port", "8501", "--server.headless", "true"]) == 0
    assert handed == [["--server.port", "8501", "--server.headless", "true"]]
    command = course.streamlit_command(handed[0])
    assert command[command.index("run") + 1] == str(ROOT / "app" / "streamlit_app.py")   # this checkout's app
    assert command[-4:] == handed[0]                 # after the project's settings: Streamlit keeps the last value
    with pytest.raises(SystemExit) as info:
        main(["info", "--server.port", "8501"])
    assert info.value.code == 2 and "unrecognized arguments: --server.port 8501" in capsys.readouterr().err


def test_varlite_lessons_never_overwrites_a_learners_notebook(tmp_path, capsys):
    from varlite.cli import main
    notebook = tmp_path / "course" / "01_images_as_tokens.ipynb"
    notebook.parent.mkdir()
    notebook.write_text("my work")
    assert main(["lessons", str(tmp_path / "course")]) == 0
    assert notebook.read_text() == "my work"
    assert (tmp_path / "course" / "02_multiscale_residual_quantization.ipynb").is_file()
    assert "left 1 already there as they were" in capsys.readouterr().out
