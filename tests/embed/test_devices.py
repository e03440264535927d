"""Embed tasks and GPUs: the device plan (pure) and one task per GPU under real Spark scheduling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curate.embed.devices import GpuProperties, gpu_batch_size, plan_device

GIB = 1 << 30
H100 = GpuProperties("NVIDIA H100 80GB HBM3", 80 * GIB, 9, 0)
T4 = GpuProperties("Tesla T4", 15 * GIB, 7, 5)
HERE = Path(__file__).resolve().parent


def test_plan_maps_the_task_address_to_its_cuda_device_and_follows_its_properties():
    props = {0: T4, 3: H100}.__getitem__
    p = plan_device("auto", "auto", 0, ["3"], props, cuda_available=False)
    assert (p.device, p.precision, p.batch_size, p.gpu) == ("cuda:3", "amp_bf16", 2048, H100.name)
    p = plan_device("cuda", "auto", 0, ["0"], props, cuda_available=True)
    assert (p.device, p.precision, p.batch_size) == ("cuda:0", "amp_fp16", 512)  # no bf16 before Ampere
    # what the user fixed stays fixed
    p = plan_device("auto", "fp16", 300, ["3"], props, cuda_available=False)
    assert (p.device, p.precision, p.batch_size) == ("cuda:3", "fp16", 300)
    assert plan_device("cuda:0", "auto", 0, ["3"], props, cuda_available=True).device == "cuda:0"
    # no GPU for the task: cuda when visible, else cpu at fp32 and batch 64
    assert plan_device("auto", "auto", 0, [], props, cuda_available=True).device == "cuda:0"
    cpu = plan_device("auto", "auto", 0, [], props, cuda_available=False)
    assert (cpu.device, cpu.precision, cpu.batch_size, cpu.gpu) == ("cpu", "fp32", 64, None)
    assert plan_device("cpu", "auto", 0, ["3"], props, cuda_available=False).device == "cpu"
    assert [gpu_batch_size(GpuProperties("x", g * GIB, 8)) for g in (8, 16, 24, 48)] == [256, 512, 1024, 2048]


def test_outside_spark_the_plan_is_this_process():
    from curate.embed.devices import task_device_plan

    p = task_device_plan("auto", "auto", 0, gpu_properties=lambda i: H100, cuda_available=lambda: False)
    assert (p.device, p.batch_size) == ("cpu", 64)
    # CUDA asked for where none is visible: one line (torch's "no NVIDIA driver" trace before)
    from curate.errors import DatasetError

    for device in ("cuda", "cuda:1"):
        with pytest.raises(DatasetError, match=f"--device {device}: no CUDA device is visible here"):
            task_device_plan(device, "auto", 0, gpu_properties=lambda i: H100, cuda_available=lambda: False)


def test_a_device_name_torch_does_not_know_is_refused_while_parsing():
    from curate.params.embed import EmbedParams

    with pytest.raises(ValueError, match="device 'gpu' is not one of auto, cpu, cuda, cuda:N"):
        EmbedParams(dataset="ds", model="curate-tiny", device="gpu")


def test_each_spark_task_gets_its_own_gpu_address_and_a_plan_for_that_gpu(tmp_path):
    """local-cluster Spark with a discovery script reporting 2 fake GPUs, 6 tasks asking for one
    GPU each: tasks running at the same time hold distinct addresses, and each plans cuda:<addr>
    with that GPU's precision and batch size."""
    script = tmp_path / "fake_gpus.sh"
    script.write_text('#!/usr/bin/env bash\necho \'{"name": "gpu", "addresses": ["0", "1"]}\'\n')
    script.chmod(0o755)
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_CONF_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(HERE / "gpu_tasks_app.py"), str(script), "2", "6"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    tasks = json.loads(lines[-1][len("RESULT "):])
    assert sorted(t["task"] for t in tasks) == list(range(6))
    expected = {"0": ("cuda:0", "amp_bf16", 2048, "NVIDIA H100 80GB HBM3"), "1": ("cuda:1", "amp_fp16", 512, "Tesla T4")}
    for t in tasks:
        assert len(t["addresses"]) == 1 and t["addresses"][0] in expected
        p = t["plan"]
        assert (p["device"], p["precision"], p["batch_size"], p["gpu"]) == expected[t["addresses"][0]]
    assert {t["addresses"][0] for t in tasks} == {"0", "1"}
    overlapping = [(a, b) for i, a in enumerate(tasks) for b in tasks[i + 1:]
                   if a["start"] < b["end"] and b["start"] < a["end"]]
    assert overlapping, "no two tasks ran at the same time"
    for a, b in overlapping:
        assert a["addresses"] != b["addresses"]
