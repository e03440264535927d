"""The docker images' pieces that can run without docker: the GPU discovery script, the
entrypoint, and the rule that the images install with the same scripts/setup.sh as CI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from spark_standalone import SPARK_HOME

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DISCOVERY = DOCKER / "get_gpus_resources.sh"


def _discover(path_env: str) -> tuple[dict, str]:
    r = subprocess.run(["/bin/bash", str(DISCOVERY)], capture_output=True, text=True, timeout=60,
                       env={"PATH": path_env})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def test_gpu_discovery_without_nvidia_smi_prints_an_empty_resource(tmp_path):
    out, err = _discover(str(tmp_path))  # a PATH with no nvidia-smi in it
    assert out == {"name": "gpu", "addresses": []}
    assert "nvidia-smi not found" in err


def test_gpu_discovery_on_this_machine_lists_what_nvidia_smi_lists():
    import os

    out, _ = _discover(os.environ.get("PATH", "/usr/bin:/bin"))
    assert out["name"] == "gpu" and all(re.fullmatch(r"\d+", a) for a in out["addresses"])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        assert out["addresses"] == []
    else:
        r = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True)
        expected = r.stdout.split() if r.returncode == 0 else []
        assert out["addresses"] == expected


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_images_install_with_the_one_setup_script(name):
    text = (DOCKER / name).read_text()
    runs = re.findall(r"^RUN (.+?)(?<!\\)$", text, flags=re.M | re.S)
    installs = [r for r in runs if "setup.sh" in r]
    assert len(installs) == 1 and "bash scripts/setup.sh" in installs[0]
    assert "pip install" not in text  # no second, drifting install path
    for src in re.findall(r"^COPY (\S+) ", text, flags=re.M):
        assert (REPO / src).exists(), f"{name} copies {src}, which is not in the repository"
    assert "get_gpus_resources.sh" in text and "entrypoint.sh" in text


def test_entrypoint_parses_runs_commands_and_names_real_spark_classes():
    entry = DOCKER / "entrypoint.sh"
    assert subprocess.run(["bash", "-n", str(entry)]).returncode == 0
    r = subprocess.run(["bash", str(entry), "echo", "passed through"], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "SPARK_HOME": str(SPARK_HOME)}, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "passed through"
    classes = set(re.findall(r"org\.apache\.spark\.[\w.]+", entry.read_text()))
    assert "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend" in classes
    found = set()
    for jar in (SPARK_HOME / "jars").glob("spark-*.jar"):
        with zipfile.ZipFile(jar) as z:
            names = set(z.namelist())
        found |= {c for c in classes if c.replace(".", "/") + ".class" in names}
    assert found == classes
