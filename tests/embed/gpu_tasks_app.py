"""A Spark app for test_devices.py: real GPU resource scheduling with fake GPU addresses.

    python gpu_tasks_app.py DISCOVERY_SCRIPT GPUS TASKS   -> JSON list of task records on stdout

Spark's local mode does not schedule task resources, so this runs ``local-cluster[1,GPUS,768]``
(a real master, worker and executor JVM on 127.0.0.1) whose worker discovers GPUS addresses with
DISCOVERY_SCRIPT; every task asks for one (``spark.task.resource.gpu.amount=1``) and runs the
device planning embed tasks run, with GPU properties made up per address (no CUDA here).
"""

from __future__ import annotations

import json
import os
import sys
import time

import pyspark

from curate.embed.devices import GpuProperties, task_device_plan
from curate.engine.spark import SparkExecutor, get_session, task_resource_addresses

GIB = 1 << 30
# address -> the GPU it pretends to be
FAKE_GPUS = {
    0: GpuProperties("NVIDIA H100 80GB HBM3", 80 * GIB, 9, 0),
    1: GpuProperties("Tesla T4", 15 * GIB, 7, 5),
    2: GpuProperties("NVIDIA A10G", 23 * GIB, 8, 6),
    3: GpuProperties("Tesla V100-SXM2-32GB", 32 * GIB, 7, 0),
}


def run_task(task: dict) -> dict:
    t0 = time.time()
    addresses = task_resource_addresses("gpu")
    plan = task_device_plan("auto", "auto", 0, gpu_properties=FAKE_GPUS.__getitem__,
                            cuda_available=lambda: False)
    time.sleep(task["sleep"])  # hold the GPU a while, so tasks overlap
    return {"task": task["i"], "addresses": addresses, "plan": plan.to_dict(), "pid": os.getpid(),
            "start": t0, "end": time.time()}


def main(script: str, gpus: int, tasks: int) -> None:
    os.environ.setdefault("SPARK_HOME", os.path.dirname(pyspark.__file__))  # local-cluster starts executors with it
    conf = {
        "spark.worker.resource.gpu.amount": str(gpus),
        "spark.worker.resource.gpu.discoveryScript": script,
        "spark.executor.resource.gpu.amount": str(gpus),
        "spark.task.resource.gpu.amount": "1",
        "spark.executor.memory": "512m",
    }
    spark = get_session(f"local-cluster[1,{gpus},768]", conf=conf, app_name="curate-gpu-tasks")
    try:
        out = SparkExecutor(spark).map_tasks([{"i": i, "sleep": 2.0} for i in range(tasks)], run_task)
    finally:
        spark.stop()
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
