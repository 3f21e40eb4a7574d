"""The course that ships with varlite: the Streamlit walkthrough (the repository's ``app/``) and the lessons
(``lessons/``), and the two commands that use them: ``varlite app`` starts the walkthrough, ``varlite lessons DIR``
copies the notebooks and the data they read into DIR.

Where the files are. In a git checkout (``pip install -e .``) they are the top-level folders ``app/`` and
``lessons/`` beside the package. A wheel carries them inside the package as ``varlite/_course/app`` and
``varlite/_course/lessons`` (pyproject.toml maps the folders there), so a plain ``pip install`` brings them. The
copy inside the package is looked for first.

How the walkthrough starts. Its modules import each other as the package ``app`` (``from app import ui``), so the
folder holding ``app/`` must come first on the Streamlit process's ``sys.path``. No package named ``app`` is installed
in site-packages (too generic a name for a shared environment); instead ``varlite app`` runs

    python -c BOOT <folder holding app/> run <app>/streamlit_app.py <the project's settings> <your arguments>

where BOOT puts that folder first on ``sys.path`` and takes the current folder off it (``python -c`` puts it there,
and an ``app.py`` of your own must not be imported in place of the walkthrough), then hands the rest to Streamlit's
own command line. The working folder stays yours: paths typed into the app are relative to it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGED = Path(__file__).resolve().parent / "_course"     # in a wheel
CHECKOUT = Path(__file__).resolve().parents[1]             # the repository root, in a git checkout

# The settings of the repository's .streamlit/config.toml, which Streamlit reads only when started in the repository
# root: no usage statistics, uploads up to 10 MB, no full garbage collection after every script run (it took ~2/3
# of the server's CPU per step). Arguments given to `varlite app` come after these, and Streamlit keeps the last.
STREAMLIT_SETTINGS = ("--browser.gatherUsageStats", "false", "--server.maxUploadSize", "10",
                      "--server.enableXsrfProtection", "true", "--runner.postScriptGC", "false")

BOOT = ("import sys; sys.path[:] = [sys.argv.pop(1)] + [p for p in sys.path if p != '']; "
        "from streamlit.web.cli import main; main(prog_name='streamlit')")

# What `varlite lessons` copies, relative to lessons/: the same patterns pyproject.toml ships in the wheel (the
# teacher's guide and the reference solutions stay in the repository).
LESSON_FILES = ("*.ipynb", "README.md", "data/reproduce/*")


def course_folder(name: str) -> Path:
    """``app`` or ``lessons``: the copy inside the installed package, else the folder of the git checkout this
    package is imported from (recognised by its pyproject.toml)."""
    packaged, checkout = PACKAGED / name, CHECKOUT / name
    if packaged.is_dir():
        return packaged
    if checkout.is_dir() and (CHECKOUT / "pyproject.toml").is_file():
        return checkout
    raise FileNotFoundError(f"the {name} folder is neither in this install of varlite ({packaged}) nor in a git "
                            f"checkout around it ({checkout}): reinstall varlite from its repository (pip install .)")


def streamlit_command(streamlit_args: list[str]) -> list[str]:
    """The command line that starts the walkthrough (see the module's docstring)."""
    app = course_folder("app")
    return [sys.executable, "-c", BOOT, str(app.parent), "run", str(app / "streamlit_app.py"),
            *STREAMLIT_SETTINGS, *streamlit_args]


def start_app(streamlit_args: list[str]) -> int:
    """Run the walkthrough until it stops. On POSIX this process becomes Streamlit (``os.execv``: Ctrl-C, a closed
    terminal or a kill reach the server itself, and its exit code is the command's); Windows has no exec, so there
    Streamlit runs as a child process that is waited for (Ctrl-C reaches both: the child shuts down by itself)."""
    command = streamlit_command(streamlit_args)
    if os.name == "posix":
        os.execv(command[0], command)
    process = subprocess.Popen(command)
    while True:
        try:
            return process.wait()
        except KeyboardInterrupt:
            continue


def copy_lessons(dest: str | Path) -> tuple[list[Path], list[Path]]:
    """Copy the notebooks, the lessons' README and the data they read (lesson 12's logs) into ``dest``, keeping its
    layout (lesson 12 reads ``data/reproduce`` next to its notebook). A file already in ``dest`` is kept, never
    overwritten: it may hold a learner's work. Returns (copied, kept), as paths in ``dest``."""
    source, dest = course_folder("lessons"), Path(dest).expanduser()
    copied, kept = [], []
    for pattern in LESSON_FILES:
        for path in sorted(source.glob(pattern)):
            target = dest / path.relative_to(source)
            if target.exists():
                kept.append(target)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied.append(target)
    return copied, kept
