"""open_clip_train's own ``main`` run in this process: its global logging, thread and RNG setup
undone afterwards, its epoch loop timed per rank, and two upstream incompatibilities worked
around (webdataset's EOF marker, DDP on CPU)."""

from __future__ import annotations

import contextlib
import logging
import os
import time


def _patch_webdataset_eof() -> None:
    """webdataset >= 0.2.96 ends each tar with an ``{}`` EOF marker that open_clip_train's
    ``group_by_keys_nothrow`` cannot read (KeyError 'fname'; webdataset#384, open_clip#935).
    The fix upstream suggests: expand tars with ``eof_value=None``."""
    import inspect

    import open_clip_train.data as ocd
    from webdataset.tariterators import tar_file_expander, url_opener

    if getattr(ocd.tarfile_to_samples_nothrow, "_curate_patched", False):
        return
    if "eof_value" not in inspect.signature(tar_file_expander).parameters:
        return  # older webdataset: nothing to fix

    def tarfile_to_samples_nothrow(src, handler=ocd.log_and_continue):
        streams = url_opener(src, handler=handler)
        files = tar_file_expander(streams, handler=handler, eof_value=None)
        return ocd.group_by_keys_nothrow(files, handler=handler)

    tarfile_to_samples_nothrow._curate_patched = True
    ocd.tarfile_to_samples_nothrow = tarfile_to_samples_nothrow


def run_open_clip_train(argv: list[str], threads: int | None, verbose: bool = False,
                        epochs: list | None = None) -> int | None:
    """open_clip_train.main.main in this process; undo its global logging and thread setup.

    ``epochs``: a list that receives one record per epoch trained (samples, seconds, device).

    Not verbose: its console log (model printout, every argument, progress) goes to
    ``os.devnull``; ``out.log`` in the run folder has all of it either way.
    """
    import random

    import numpy as np
    import torch

    from curate.models import register_configs
    from open_clip_train.main import main as oc_main

    _patch_webdataset_eof()
    register_configs()  # curate-tiny & co. exist for open_clip_train once registered
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {n: logging.getLogger(n).level for n in list(logging.root.manager.loggerDict)}
    old_threads = torch.get_num_threads()
    # open_clip_train seeds the global RNGs; the caller's random streams stay as they were
    rng_states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    if threads:
        torch.set_num_threads(threads)
    if not verbose:  # handlers someone else installed (basicConfig) would echo every line too
        for h in handlers:
            root.removeHandler(h)
    try:
        with contextlib.ExitStack() as stack:
            if not verbose:
                stack.enter_context(contextlib.redirect_stderr(stack.enter_context(open(os.devnull, "w"))))
            if epochs is not None:
                stack.enter_context(_timed_epochs(epochs))
            stack.enter_context(_seeded_sample_shuffle())
            if argv[argv.index("--device") + 1].startswith("cpu"):
                stack.enter_context(_cpu_ddp())
            return oc_main(argv)
    finally:
        for h in list(root.handlers):
            if h not in handlers:
                root.removeHandler(h)
                h.close()
        for h in handlers:
            if h not in root.handlers:
                root.addHandler(h)
        root.setLevel(level)
        for n, lv in levels.items():
            logging.getLogger(n).setLevel(lv)
        torch.set_num_threads(old_threads)
        random.setstate(rng_states[0])
        np.random.set_state(rng_states[1])
        torch.set_rng_state(rng_states[2])


@contextlib.contextmanager
def _seeded_sample_shuffle():
    """open_clip_train shuffles samples with ``wds.shuffle``, which seeds itself from the pid and
    the clock, so two runs with the same ``--seed`` saw their samples in another order (different
    losses from the first step). While it runs, that stage draws from the data-loader worker's
    seed, which open_clip_train's ``--seed`` fixes (its shard sampling does the same), a new one
    each epoch: same seed, same data, same order."""
    import open_clip_train.data as ocd
    import webdataset as wds
    from webdataset import filters

    class SeededShuffle(wds.PipelineStage):
        def __init__(self, bufsize=1000, initial=100):
            self.bufsize, self.initial, self.epoch = bufsize, initial, 0

        def run(self, src):
            self.epoch += 1  # the stage lives as long as its (persistent) worker: one run an epoch
            return filters._shuffle(src, self.bufsize, self.initial, seed=ocd.pytorch_worker_seed(self.epoch))

    original = wds.shuffle
    wds.shuffle = SeededShuffle
    try:
        yield
    finally:
        wds.shuffle = original


@contextlib.contextmanager
def _cpu_ddp():
    """open_clip_train 3.3 wraps the model as ``DistributedDataParallel(model, device_ids=[device])``,
    which torch refuses for a CPU module (device_ids must be None there), so its gloo/CPU path
    cannot start. While it runs, DDP drops a CPU device list; everything else is torch's DDP."""
    import torch

    ddp = torch.nn.parallel.DistributedDataParallel

    class CpuDistributedDataParallel(ddp):
        def __init__(self, module, device_ids=None, *args, **kwargs):
            if device_ids is not None and all(torch.device(d).type == "cpu" for d in device_ids):
                device_ids = None
            super().__init__(module, device_ids, *args, **kwargs)

    torch.nn.parallel.DistributedDataParallel = CpuDistributedDataParallel
    try:
        yield
    finally:
        torch.nn.parallel.DistributedDataParallel = ddp


@contextlib.contextmanager
def _timed_epochs(records: list):
    """Time open_clip_train's epoch loop (model building, data setup and saving excluded):
    this rank's samples and seconds per epoch, for per-rank throughput."""
    import open_clip_train.main as ocm

    original = ocm.train_one_epoch

    def timed(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, tb_writer=None):
        import torch

        t = time.perf_counter()
        out = original(model, data, loss, epoch, optimizer, scaler, scheduler, dist_model, args, tb_writer=tb_writer)
        if str(args.device).startswith("cuda"):
            torch.cuda.synchronize(args.device)
        records.append({"epoch": epoch + 1, "device": str(args.device),
                        "samples": int(data["train"].dataloader.num_batches) * int(args.batch_size),
                        "seconds": time.perf_counter() - t})
        return out

    ocm.train_one_epoch = timed
    try:
        yield
    finally:
        ocm.train_one_epoch = original
