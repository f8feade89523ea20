"""pyproject.toml: ``pip install .`` gives the package and working console scripts, and
every third-party module the package imports is a declared dependency.

The install goes into a throwaway virtual environment whose site-packages point at the
current environment's (a ``.pth`` file), with ``--no-deps --no-build-isolation --no-index``:
nothing is downloaded, TensorFlow is not installed again, and what is tested is the project's
own build and its entry points.
"""

import ast
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

from tests.helpers import ROOT

SCRIPTS = ("npvae-train", "npvae-evaluate", "npvae-export", "npvae-reproduce",
           "npvae-explore")


def pyproject():
    if tomllib is None:
        pytest.skip("tomllib needs Python 3.11")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def make_venv(folder):
    """A virtual environment that sees the current one's packages, without pip."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True,
                   timeout=120)
    python = str(folder / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(purelib, "shared.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The project pip-installed (from a copy of its sources) into a fresh environment."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source)
    shutil.copytree(os.path.join(ROOT, "npvae_tf"), source / "npvae_tf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    python = make_venv(tmp / "venv")
    result = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install",
                             "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
                             str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "venv", tmp


def test_console_scripts_are_installed_and_answer_help(installed):
    venv, tmp = installed
    for script in SCRIPTS:
        path = venv / "bin" / script
        assert path.is_file(), f"{script} not installed"
        # From a folder without the checkout: the installed package answers, not the sources.
        result = subprocess.run([str(path), "--help"], capture_output=True, text=True,
                                cwd=str(tmp), timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.startswith(f"usage: {script} ")
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import npvae_tf; print(npvae_tf.__file__)"],
                           capture_output=True, text=True, cwd=str(tmp), timeout=120)
    assert where.returncode == 0, where.stderr[-2000:]
    assert where.stdout.strip().startswith(str(venv))


def test_console_scripts_name_importable_main_functions():
    import importlib

    for name, target in pyproject()["project"]["scripts"].items():
        assert name in SCRIPTS
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function))


def third_party_imports():
    """Top-level names of every module the package imports, outside the standard library."""
    names = set()
    for folder, _, files in os.walk(os.path.join(ROOT, "npvae_tf")):
        for file in files:
            if file.endswith(".py"):
                with open(os.path.join(folder, file)) as f:
                    tree = ast.parse(f.read())
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        names.update(a.name.split(".")[0] for a in node.names)
                    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "npvae_tf"}


def test_every_imported_package_is_a_declared_dependency():
    declared = {re.split(r"[<>=!~ \[;]", d)[0].lower().replace("_", "-")
                for d in pyproject()["project"]["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    imported = third_party_imports()
    assert {"tensorflow", "numpy", "scipy", "PIL", "sklearn"} <= imported  # the scan works
    for module in sorted(imported):
        owners = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
        assert owners & declared, f"{module} (from {sorted(owners)}) is not declared"


def test_installed_package_loads_a_run_and_embeds_images(installed, tmp_path):
    from tests.helpers import digit_images, make_run

    venv, tmp = installed
    images, labels = digit_images(100, 0)
    make_run(str(tmp_path / "run"), images, labels, z_dim=3)
    code = ("import numpy as np, npvae_tf\n"
            f"run = npvae_tf.load_run({str(tmp_path / 'run')!r})\n"
            "x = run.embed(np.load('images.npy'))\n"
            "print(npvae_tf.__file__, x.shape)\n")
    np.save(tmp / "images.npy", images[:5])
    result = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True,
                            text=True, cwd=str(tmp), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    where, shape = result.stdout.strip().rsplit(" ", 2)[0], result.stdout.strip()[-6:]
    assert where.startswith(str(venv)) and shape == "(5, 2)"
