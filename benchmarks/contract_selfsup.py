"""Self-supervised fused state on the second robot: how well a linear probe reads the task from it.

A contract without heads trains the fused state by itself (`fusion train --contract` with
`heads: []`): a CLIP-style contrastive loss between the image and each other input, and the
joints 0.2 and 0.4 s ahead predicted from the fused state. This script trains it with several
seeds on the training bags of benchmarks/contract_robot.py (run that first: it writes the bags
and contract.yaml), then fits linear probes on the fused state of the training bags and scores
them on the held-out bags:

- phase: a ridge classifier on the 4 task phases (accuracy);
- next_joints: ridge regression on the 5 commanded joints 0.1..0.5 s ahead (mean abs error).

The same probes run on the fused state of the same architecture left untrained (same seed,
same frozen ImageNet backbone, joint normalisation from the same data), and on the raw inputs
the probes could use without any fused state (the normalised joints), in the same run.

    .venv/bin/python benchmarks/contract_selfsup.py --out out/contract --json benchmarks/contract_selfsup.json
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import yaml

# the sibling benchmark's runner (this directory is on sys.path when a script here runs)
from contract_robot import cli


def ridge(x: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    x1 = np.c_[x, np.ones(len(x))]
    return np.linalg.solve(x1.T @ x1 + lam * len(x) * np.eye(x1.shape[1]), x1.T @ y)


def probe(train_x, test_x, train, test, lam: float = 1e-2) -> dict[str, float]:
    """Linear probes fitted on train rows, scored on test rows (features standardised on train)."""
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-6
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    out = {}
    m_tr, m_te = train.heads["phase.mask"], test.heads["phase.mask"]
    w = ridge(a[m_tr], np.eye(4)[train.heads["phase"][m_tr]], lam)
    pred = (np.c_[b[m_te], np.ones(m_te.sum())] @ w).argmax(1)
    out["phase_acc"] = float((pred == test.heads["phase"][m_te]).mean())
    m_tr, m_te = train.heads["next_joints.mask"], test.heads["next_joints.mask"]
    w = ridge(a[m_tr], train.heads["next_joints"][m_tr], lam)
    pred = np.c_[b[m_te], np.ones(m_te.sum())] @ w
    out["next_joints_mae"] = float(np.abs(pred - test.heads["next_joints"][m_te]).mean())
    return out


def states(model, data, cache: Path) -> np.ndarray:
    from fusion_node.evaluate import predict
    from fusion_node.features import image_features

    features = image_features(model, data, cache / "features", progress=False)
    return predict(model, data, np.arange(len(data)), features=features)["state"]


def run(args: argparse.Namespace) -> dict:
    import torch

    from fusion_node.contract import load_contract
    from fusion_node.dataset import load_or_build
    from fusion_node.models import build_model, load_model

    out = Path(args.out)
    bags = sorted(p for p in (out / "bags").iterdir() if (p / "metadata.yaml").is_file())
    train_bags, test_bags = bags[: args.train], bags[args.train : args.train + args.test]
    labelled = load_contract(out / "contract.yaml")
    data = yaml.safe_load((out / "contract.yaml").read_text())
    data["heads"] = []
    selfsup = out / "selfsup.yaml"
    selfsup.write_text(yaml.safe_dump(data, sort_keys=False))
    (out / "selfsup-train.yaml").write_text(f"epochs: {args.epochs}\n")
    cache = out / "cache"
    rows = []
    for seed in range(args.seeds):
        model_dir = out / f"selfsup-s{seed}"
        cli("train", "--contract", selfsup, "--config", out / "selfsup-train.yaml", "--bags", *train_bags,
            "--out", model_dir, "--cache", cache, "--seed", seed, "--no-progress")
        spec, trained = load_model(model_dir)
        sets = {k: load_or_build(v, labelled.model_spec(spec), labelled.sync_config(), cache / "datasets",
                                 progress=False, contract=labelled)
                for k, v in (("train", train_bags), ("test", test_bags))}
        torch.manual_seed(seed)
        untrained = build_model(spec).eval()
        untrained.joints.set_stats(trained.joints.mean.clone(), trained.joints.std.clone())
        j = len(spec.joint_names)
        row = {"seed": seed,
               "trained": probe(states(trained, sets["train"], cache), states(trained, sets["test"], cache),
                                sets["train"], sets["test"]),
               "untrained": probe(states(untrained, sets["train"], cache), states(untrained, sets["test"], cache),
                                  sets["train"], sets["test"]),
               "joints_only": probe(sets["train"].joints[:, : 2 * j], sets["test"].joints[:, : 2 * j],
                                    sets["train"], sets["test"])}
        log = json.loads((model_dir / "train_log.json").read_text())
        row["train_s"] = log["seconds"]
        rows.append(row)
        print(seed, {k: v for k, v in row.items() if k != "seed"}, flush=True)
    test = sets["test"]
    m = test.heads["phase.mask"]
    baseline = {"phase_majority": float((test.heads["phase"][m] == np.bincount(test.heads["phase"][m]).argmax()).mean()),
                "next_joints_hold": float(np.abs(test.heads["next_joints.hold"] - test.heads["next_joints"])
                                          [test.heads["next_joints.mask"]].mean())}
    summary = {k: {metric: (statistics.mean(r[k][metric] for r in rows), statistics.stdev(r[k][metric] for r in rows)
                            if len(rows) > 1 else 0.0) for metric in rows[0][k]}
               for k in ("trained", "untrained", "joints_only")}
    return {"bags": {"train": len(train_bags), "test": len(test_bags)}, "epochs": args.epochs, "runs": rows,
            "summary": summary, "baselines": baseline}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/contract")
    p.add_argument("--train", type=int, default=16)
    p.add_argument("--test", type=int, default=4)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--json")
    a = p.parse_args()
    res = run(a)
    for name, metrics in res["summary"].items():
        print(name, {k: f"{m:.4f} ± {s:.4f}" for k, (m, s) in metrics.items()})
    print(res["baselines"])
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1) + "\n")
