"""``fiqa verify``: check every committed partition of a scoring output against its
``_SUCCESS``.

    fiqa verify output=s3://lake-scores/faces

Each partition with a ``_SUCCESS`` (the ``date=`` folders of ``fiqa score``, or the output
of ``fiqa pseudo-label`` itself) must hold exactly the Parquet files its ``_SUCCESS`` lists,
each of the size listed: one listing per partition, nothing read. ``rows=true`` also reads
each file's footer and compares its row count. Nothing is changed. Exit status 0 when
every partition matches, 1 when one does not (each difference is printed).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from fiqa_core.config import resolve_config, setting
from fiqa_core.errors import NotFoundError
from jobs.cli import JobFailed, overrides_of, parse_args, run_job, settings_parser


@dataclass(frozen=True)
class VerifyConfig:
    output: str = setting(help="a fiqa score or fiqa pseudo-label output (path or URI)")
    rows: bool = setting(False, "also read each file's footer and check its row count")
    json: bool = setting(False, "print the result as JSON")


def get_args_parser() -> argparse.ArgumentParser:
    return settings_parser("fiqa verify", (__doc__ or "").strip(), VerifyConfig)


def run(cfg: VerifyConfig) -> dict:
    from jobs.score.commit import committed, describe, read_marker, verify

    partitions = committed(cfg.output)
    if not partitions:
        raise NotFoundError(f"{cfg.output}: no committed partition (no _SUCCESS) to verify")
    result = {}
    for part in partitions:
        problems = verify(part, rows=cfg.rows)
        result[part] = problems
        if not cfg.json:
            summary = read_marker(part)
            if problems:
                print(f"DAMAGED {part}: {describe(problems)}", flush=True)
            else:
                print(f"ok      {part}: {summary.get('files')} files, {summary.get('rows')} "
                      "rows", flush=True)
    damaged = [p for p, problems in result.items() if problems]
    if cfg.json:
        print(json.dumps({"partitions": result, "damaged": damaged}, indent=2))
    if damaged:
        raise JobFailed(f"{len(damaged)} of {len(partitions)} committed partition(s) do not "
                        "match their _SUCCESS; a night does not reuse rows from them. Restore "
                        "the files, or move the partition aside to rescore it")
    return result


def main(args: argparse.Namespace) -> int:
    return run_job(
        "fiqa verify",
        lambda: run(resolve_config(VerifyConfig, args.config, overrides_of(args))),
    )


if __name__ == "__main__":
    raise SystemExit(main(parse_args(get_args_parser())))
