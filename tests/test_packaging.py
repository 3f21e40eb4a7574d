"""The conda environment.yml and pyproject.toml must ask for the same packages at the same versions."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"pytorch": "torch"}     # conda package name -> PyPI name


def split_requirement(req: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req).groups()
    return name.lower(), spec.replace(" ", "")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_reqs = dict(split_requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"])
    text = (ROOT / "environment.yml").read_text()
    dependencies = text.split("\ndependencies:\n", 1)[1]
    conda_lines = [line.strip()[2:] for line in dependencies.splitlines() if line.strip().startswith("- ")]
    conda_reqs = {}
    for line in conda_lines:
        if line.startswith("python"):
            continue
        name, spec = split_requirement(line)
        conda_reqs[CONDA_NAMES.get(name, name)] = spec
    assert conda_reqs == pip_reqs


def test_python_version_agrees():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert f"- python{project['requires-python']}" in (ROOT / "environment.yml").read_text()


def test_streamlit_reads_the_projects_server_settings(monkeypatch):
    """`make app` / `make serve` start Streamlit in the repository root, where it reads .streamlit/config.toml:
    no usage statistics, 10 MB uploads, and no full garbage collection after every script run (it cost ~2/3 of
    the server's CPU per step under load)."""
    from streamlit import config
    before = Path.cwd()
    monkeypatch.chdir(ROOT)
    config.get_config_options(force_reparse=True)
    try:
        assert config.get_option("browser.gatherUsageStats") is False
        assert config.get_option("server.maxUploadSize") == 10
        assert config.get_option("runner.postScriptGC") is False
    finally:                      # the rest of the session sees the configuration it had before
        monkeypatch.chdir(before)
        config.get_config_options(force_reparse=True)
