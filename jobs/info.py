"""``fiqa info``: versions, devices and the model presets."""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import dataclass

from fiqa_core.config import resolve_config, setting
from jobs.cli import overrides_of, parse_args, run_job, settings_parser

PACKAGES = ("fiqa", "torch", "torchvision", "timm", "ray", "pyarrow", "numpy", "pillow",
            "onnxruntime")


@dataclass(frozen=True)
class InfoConfig:
    json: bool = setting(False, "machine-readable output")
    cost: bool = setting(False, "also count parameters and GMACs per preset (slower; needs "
                         "the cost extra)")


def get_args_parser() -> argparse.ArgumentParser:
    return settings_parser("fiqa info", __doc__ or "", InfoConfig)


def collect(with_cost: bool = False) -> dict:
    import torch

    from fiqa_core import get_preset, list_presets, model_cost
    from fiqa_core.extras import installed_version

    versions = {"python": platform.python_version()}
    versions.update({name: installed_version(name) for name in PACKAGES})
    devices = ["cpu"] + [
        f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
    ]
    presets = []
    for name in list_presets():
        p = get_preset(name)
        entry = {
            "name": name,
            "role": p.role,
            "image_size": p.image_size,
            "mean": list(p.mean),
            "std": list(p.std),
            "selection_metric": p.selection_metric,
            "description": p.description,
        }
        if with_cost:
            cost = model_cost(name)
            entry.update(params=cost.params, gmacs=round(cost.gmacs, 4))
        presets.append(entry)
    from fiqa_core.engines import get_engine, list_engines

    engines = [{"name": n, "files": list(get_engine(n).files) or ["checkpoint directory"],
                "description": get_engine(n).description} for n in list_engines()]
    return {"versions": versions, "devices": devices, "presets": presets, "engines": engines}


def main(args: argparse.Namespace) -> int:
    return run_job("fiqa info", lambda: show(resolve_config(InfoConfig, args.config,
                                                            overrides_of(args))))


def show(cfg: InfoConfig) -> None:
    info = collect(with_cost=cfg.cost)
    if cfg.json:
        print(json.dumps(info, indent=2))
        return
    print(
        "versions: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in info["versions"].items())
    )
    print("devices:  " + "; ".join(info["devices"]))
    print("presets:")
    for p in info["presets"]:
        cost = f", {p['params']:,} params, {p['gmacs']} GMACs" if "params" in p else ""
        print(
            f"  {p['name']:<22} {p['role']:<8} {p['image_size']} px, mean {p['mean']}, "
            f"std {p['std']}, best by {p['selection_metric']}{cost}"
        )
        print(f"  {'':<22} {p['description']}")
    print("engines:")
    for e in info["engines"]:
        print(f"  {e['name']:<22} {', '.join(e['files'])}: {e['description']}")


if __name__ == "__main__":
    raise SystemExit(main(parse_args(get_args_parser())))
