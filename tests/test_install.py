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
    # The API is as quiet as train.py: none of TensorFlow's start-up lines.
    for noise in ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard",
                  "cuda drivers", "cuInit"):
        assert noise not in result.stderr, result.stderr[-2000:]


def test_importing_the_package_hides_only_tensorflows_start_up_lines(tmp_path):
    code = ("import sys, warnings\n"
            f"sys.path.insert(0, {ROOT!r})\n"
            "import npvae_tf\n"
            "npvae_tf.build_model  # imports TensorFlow, Keras and the model\n"
            "import tensorflow as tf\n"
            "warnings.warn('a Python warning stays')\n"
            "tf.get_logger().warning('a TensorFlow warning stays')\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=str(tmp_path), timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    for noise in ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard",
                  "cuda drivers", "cuInit"):
        assert noise not in result.stderr, result.stderr
    assert "a Python warning stays" in result.stderr
    assert "a TensorFlow warning stays" in result.stderr


def test_make_install_installs_the_package_editable_after_the_requirements(tmp_path):
    """What the README's set-up runs (printed by ``make -n``, not run: no network here)."""
    result = subprocess.run(["make", "-n", "-B", "install", f"VENV={tmp_path / 'venv'}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    if result.returncode != 0 and "not found" in result.stderr:
        pytest.skip("no make")
    lines = result.stdout.splitlines()
    requirements = next(i for i, l in enumerate(lines) if "-r requirements.txt" in l)
    editable = next(i for i, l in enumerate(lines) if re.search(r"pip install .*-e \.$", l))
    assert requirements < editable


def test_an_editable_install_imports_from_any_folder(tmp_path):
    source = tmp_path / "checkout"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source)
    shutil.copytree(os.path.join(ROOT, "npvae_tf"), source / "npvae_tf",
                    ignore=shutil.ignore_patterns("__pycache__"))
    python = make_venv(tmp_path / "venv")
    result = subprocess.run([sys.executable, "-m", "pip", "--python", python, "install",
                             "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
                             "-e", str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import npvae_tf, npvae_tf.runs.layout\n"
            "print(npvae_tf.__file__)\n"
            "try:\n"
            "    npvae_tf.runs.layout.check_run_dir('runs/quick')\n"
            "except npvae_tf.RunError as e:\n"
            "    print(e)\n")
    result = subprocess.run([python, "-c", code], capture_output=True, text=True,
                            cwd=str(elsewhere), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    where, error = result.stdout.strip().splitlines()
    assert where == str(source / "npvae_tf" / "__init__.py")  # the checkout's sources
    assert error == f"runs/quick ({elsewhere}/runs/quick): no such run folder"
