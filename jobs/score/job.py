"""The scoring run end to end: list -> plan -> decode -> score -> Parquet -> ``_SUCCESS``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import time

from fiqa_core import storage
from fiqa_core.config import resolve_config
from fiqa_core.errors import ConfigError, FiqaError, InputError, LeaseLost
from fiqa_core.extras import require
from fiqa_core.scoring import is_onnx_file, resolve_engine
from jobs import faults
from jobs.cli import JobFailed, overrides_of, run_job, settings_parser

from .commit import MARKER, data_files, dates, manifest, previous_partition
from .config import ScoreConfig, check, partition_uri
from .listing import col, list_images
from .pipeline import FAULT_MARKER, score_stages
from .planning import buckets_of, check_models, finish_reused, plan, remove_temporaries, repair
from .summary import final_line, summarise

log = logging.getLogger("fiqa.score")
ROW_GROUP_ROWS = 100_000  # ~18 MB of result rows: one row group for most files


def get_args_parser(prog: str = "fiqa score", description: str = "") -> argparse.ArgumentParser:
    from jobs import score

    about = (score.__doc__ or "").split("\n\nModules:")[0].strip()
    return settings_parser(prog, description or about, ScoreConfig)


def main(args: argparse.Namespace, nightly: bool = True) -> int:
    prog = "fiqa score" if nightly else "fiqa pseudo-label"
    return run_job(
        prog,
        lambda: run(resolve_config(ScoreConfig, args.config, overrides_of(args)), nightly=nightly),
    )


def _already_complete(out: str, cfg: ScoreConfig, model_id: str) -> dict | None:
    marker = storage.join(out, MARKER)
    if not storage.exists(marker):
        return None
    summary = json.loads(storage.read_bytes(marker))
    if summary.get("model") == model_id and summary.get("input") == cfg.input:
        print(f"{out} is complete ({summary['rows']} rows, model {model_id}); nothing to do.")
        return summary
    raise ConfigError(
        f"{out} already holds a complete run with model {summary.get('model')} over "
        f"{summary.get('input')}; write to another output (or run_date)"
    )


def _check_output_kind(output: str, nightly: bool) -> None:
    """One kind of run per output: a nightly output's root holds only ``date=`` partitions,
    a pseudo-label output is one partition. Mixing them would make each kind's partition
    hold the other's files."""
    from .planning import has_rows

    if nightly and (storage.exists(storage.join(output, MARKER)) or has_rows(output)):
        raise ConfigError(
            f"{output} holds a fiqa pseudo-label output (a {MARKER} or bucket= folders at "
            "its root); fiqa score writes date= partitions below its output: use another "
            "output"
        )
    if not nightly and dates(output):
        raise ConfigError(
            f"{output} holds fiqa score's date= partitions; fiqa pseudo-label writes one "
            "partition at its output: use another output"
        )


def run(cfg: ScoreConfig, nightly: bool = True) -> dict:
    """Score every image under ``cfg.input``; returns the ``_SUCCESS`` summary.

    One run at a time writes a partition: a second one is refused with
    :class:`~fiqa_core.errors.OutputBusy` while the first holds the partition's lease.
    """
    from fiqa_core.lease import Lease
    from fiqa_core.scoring import read_model_config  # metadata only: never loads torch

    check(cfg)
    if resolve_engine(cfg.engine, cfg.model) == "onnx":  # before any work: the actors need
        require("onnxruntime")  # it, and the exporter when they export a checkpoint
        if not is_onnx_file(cfg.model):
            require("onnxscript")
    model = read_model_config(cfg.model)
    out = partition_uri(cfg, nightly)
    prog = "fiqa score" if nightly else "fiqa pseudo-label"
    try:
        _check_output_kind(cfg.output, nightly)
        done = _already_complete(out, cfg, model.id)
        if done is not None:
            return done
        with Lease(out, f"{prog} input={cfg.input} model={cfg.model}") as lease:
            done = _already_complete(out, cfg, model.id)  # the run that held it finished
            return done if done is not None else _run(cfg, nightly, model, out, lease)
    except (FiqaError, LeaseLost):
        raise
    except Exception as e:  # the store failed beyond its retries, a worker was lost...
        raise JobFailed(
            f"{prog} failed before committing {out} ({_reason(e)}). Nothing was committed "
            "and nothing committed before was changed; run it again to resume (rows already "
            "written are kept)."
        ) from e


def _reason(e: BaseException) -> str:
    """The line that says what went wrong: the last ``Type: message`` line of the error's
    text (a Ray error holds the remote traceback, then Ray Data's advice)."""
    import re

    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines()]
    lines = [ln for ln in lines if ln]
    if len(lines) == 1:
        return f"{type(e).__name__}: {lines[0]}"
    errors = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception|Lost)\b[^:]*: ", ln)]
    return (errors or lines or [type(e).__name__])[-1]  # Ray Data adds advice after it


def _run(cfg: ScoreConfig, nightly: bool, model, out: str, lease) -> dict:
    from jobs.ray_env import cluster_has_gpus, init_ray

    t0 = time.time()
    init_ray(cfg.address, min_cpus=2)
    use_gpu = cluster_has_gpus() if cfg.use_gpu is None else cfg.use_gpu
    if use_gpu and resolve_engine(cfg.engine, cfg.model) == "onnx":
        from fiqa_core.onnx_engine import cuda_available

        if not cuda_available():  # the CPU onnxruntime package, as the onnx extra installs
            if cfg.use_gpu:
                raise ConfigError(
                    "use_gpu=true with the onnx engine needs onnxruntime's CUDA provider, "
                    "which this onnxruntime lacks: install onnxruntime-gpu on the cluster's "
                    "image, or set use_gpu=false"
                )
            log.warning("the cluster has GPUs but this onnxruntime has no CUDA provider: "
                        "the onnx engine scores on CPUs (install onnxruntime-gpu to use them)")
            use_gpu = False
    listing, n_files = list_images(cfg)
    images = listing.count()
    print(f"fiqa: listed {n_files} files, {images} images ({time.time() - t0:.0f} s)", flush=True)
    removed = remove_temporaries(out)  # this run's own partition, under its lease
    if removed:
        log.warning("%s: removed %d temporary file(s) of an interrupted write", out, removed)
    check_models(out, model.id)
    previous, damaged = previous_partition(cfg.output, out) if nightly else (None, [])
    prev_buckets = buckets_of(previous)
    if previous and prev_buckets != cfg.buckets:
        log.warning(
            "%s used %s buckets, not %d: rescoring everything", previous, prev_buckets, cfg.buckets
        )
        previous = None
    run_stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    planned = plan(listing, out, previous, model.id, cfg.buckets)
    print(f"fiqa: planned what to score and reuse ({time.time() - t0:.0f} s)", flush=True)
    to_score = planned.filter(expr=col("action") == "score")
    reused = planned.filter(expr=col("action") == "reuse").map_batches(
        finish_reused, batch_format="pandas"
    )
    die_after = faults.armed("score_actor_dies_after_batches")
    scored = score_stages(to_score, cfg, model.preprocessing.size, use_gpu, run_stamp, die_after,
                          model.id)
    # result rows are gathered into large write tasks: each writes at most one file per
    # bucket, so a lake's scores land in a few large files instead of one per block
    # (min_bytes_per_file is experimental in Ray 2.60; min_rows_per_file with partition
    # columns is deprecated, and a repartition by bucket would hold every row to the end).
    # row_group_size makes Arrow gather each file's rows into large row groups: without it
    # every 64-row block became a row group (247 in a 381-row file), whose metadata bloated
    # the files 9x and held the write task's memory at 1.1 GB for 100k rows
    fs, path = storage.arrow_filesystem(out)  # each file published whole or not at all
    scored.union(reused).write_parquet(
        path,
        filesystem=fs,
        partition_cols=["bucket"],
        min_bytes_per_file=max(1, int(cfg.write_batch_mb * 2**20)),
        row_group_size=ROW_GROUP_ROWS,
    )
    summary = summarise(out)
    if summary["rows"] != images:  # an image's rows twice, or rows of files not listed
        lease.check()  # still ours: repair rewrites files
        repaired = repair(listing, out, cfg.buckets)
        if repaired["duplicates"]:
            log.warning("%s: removed %d duplicate row(s) (one row per image kept)", out,
                        repaired["duplicates"])
        if repaired["unlisted"]:
            raise InputError(
                f"{out} holds {repaired['unlisted']} row(s) of files this run did not list "
                f"(e.g. {repaired['example']}): the partition was started over another input, "
                "or files were deleted since. Nothing was removed. Score into another output "
                "(or run_date), or move this partition aside to rescore it."
            )
        summary = summarise(out)
    summary.update(
        input=cfg.input,
        model=model.id,
        files_listed=n_files,
        images=images,
        skipped_non_image=n_files - images,
        seconds=round(time.time() - t0, 1),
        buckets=cfg.buckets,
        run_started=run_stamp,
        previous=previous,
        previous_damaged=damaged,
    )
    summary["images_per_s"] = round(summary["scored"] / max(summary["seconds"], 1e-9), 1)
    if summary["rows"] != images:
        raise InputError(
            f"{out}: {summary['rows']} rows for {images} images after repair; the partition "
            "holds rows this run cannot account for. Move it aside and run again."
        )
    remove_temporaries(out)  # a write task lost mid-write and redone by Ray leaves one
    summary["manifest"] = manifest(out, summary.pop("rows_by_file"))
    foreign = sorted(set(data_files(out)) - {f["name"] for f in summary["manifest"]})
    if foreign:  # the commit must pass its own check (fiqa verify)
        raise InputError(
            f"{out} holds files this run did not write ({', '.join(foreign[:3])}): nothing "
            "was committed. Move them out of the partition and run again"
        )
    lease.check()  # never commit over a run that took the output over
    storage.write_bytes(storage.join(out, MARKER), json.dumps(summary, indent=2).encode())
    try:
        storage.remove(storage.join(cfg.output, FAULT_MARKER))
    except OSError as e:  # committed already: a leftover test marker is not a failure
        log.warning("could not remove %s (%s)", FAULT_MARKER, e)
    print(final_line(summary, out, MARKER))
    return summary
