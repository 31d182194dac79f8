"""Benchmark: one retrain cycle end to end, and the skill the model reaches on synthetic and real bars.

    python bench/train.py [--symbols 5] [--days 5] [--tape-dir ../shared/data/tape] [--out bench/results/train.json]

1. **Retrain cycle** (what the retrain DAG does every 15 minutes), against real Azurite and a real MLflow
   server started in a fresh temporary home on free ports: N synthetic symbols x D trading days of
   1-minute bars are written to the lake, then ``tickcast.retrain.retrain_cycle`` is timed: read the lake
   window -> features -> temporal split -> fit (early stopping) -> ONNX export + parity -> evaluation ->
   MLflow run + registered version -> production/challenger judgement -> alias. Targets on 2 cores: cycle
   <= 90 s, training (fit) <= 60 s. Peak RSS of this process is reported.
2. **Skill table**: model vs persistence (vs the oracle, where one exists) on the held-out window:
   - the synthetic market (AR(1) returns, phi 0.4 and 0.0), where the oracle's skill is the ceiling;
   - the real tape (SPY, IBM, AIG, BAC; 6 sessions) if ``--tape-dir`` exists. Its vendor reserves its
     rights: it is read in place and never copied.
   RMSE is in basis points of the last close; p is the one-sided Diebold-Mariano p-value vs persistence;
   "gate" says whether the promotion gate would accept the model against persistence alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pandas as pd
import psutil

from bench.common import stack_ports
from emulators.yahoo.frames import lake_frame, oracle_function
from emulators.yahoo.synthetic import SyntheticMarket
from tickcast.settings import PROJECT_ROOT, load_settings


def retrain_cycle_benchmark(n_symbols: int, days: int) -> dict[str, Any]:
    from tickcast.lake.store import Lake
    from tickcast.registry.mlflow_registry import Registry
    from tickcast.retrain import retrain_cycle, train_and_register
    from tickcast_dev.stack.supervisor import Supervisor

    symbols = [f"B{i:02d}" for i in range(n_symbols)]
    with tempfile.TemporaryDirectory(prefix="tickcast-bench-train-") as home:
        ports = stack_ports()
        settings = load_settings(
            _env_file=None,
            symbols=symbols,
            stack={"home": home, **ports},
            mlflow={"model_name": "bench-lstm-attention", "experiment": "bench"},
        )
        os.environ.update(settings.to_env())
        sup = Supervisor(settings)
        try:
            t0 = time.monotonic()
            sup.up(["mlflow"])  # and azurite
            stack_s = time.monotonic() - t0
            market = SyntheticMarket(21, symbols, {}, 0.4, null_fraction=0.0)
            bars = lake_frame(market, symbols, days, time.time())
            Lake.from_settings(settings).upsert_frame(bars)
            t1 = time.monotonic()
            outcome = retrain_cycle(settings, oracle=oracle_function(market))
            cycle_s = time.monotonic() - t1
            # a second training alone, for the split of the time between the steps
            result, _ = train_and_register(settings, oracle=oracle_function(market), registry=Registry(settings))
        finally:
            sup.down()
    return {
        "symbols": n_symbols,
        "days": days,
        "bars": len(bars),
        "stack_up_s": round(stack_s, 1),
        "cycle_s": round(cycle_s, 1),
        "cycle_outcome": outcome.status,
        "cycle_message": outcome.message,
        "steps_s": {k: round(v, 2) for k, v in result.timings.items()},
        "epochs_run": int(result.metrics["epochs_run"]),
        "n_train": result.params["n_train"],
        "n_test": result.params["n_test"],
    }


def skill_row(name: str, bars: pd.DataFrame, oracle: Any = None) -> dict[str, Any]:
    from tickcast.model.training import train
    from tickcast.retrain import scores_of
    from tickcast.validation.gate import decide

    cfg = load_settings(_env_file=None).model
    t0 = time.monotonic()
    result = train(bars, cfg, oracle=oracle)
    frame = result.test_frame.rename(columns={"predicted_close": "challenger"}).assign(
        persistence=result.test_frame["last_close"]
    )
    challenger, persistence = scores_of(frame, "challenger"), scores_of(frame, "persistence")
    verdict = decide(challenger, persistence, margin=0.0)
    row: dict[str, Any] = {
        "data": name,
        "symbols": int(bars["symbol"].nunique()),
        "test_minutes": challenger.n,
        "model_rmse_bp": round(challenger.rmse, 3),
        "persistence_rmse_bp": round(persistence.rmse, 3),
        "skill": round(1 - challenger.rmse / persistence.rmse, 4),
        "direction": round(challenger.directional_accuracy, 3),
        "dm_p": round(challenger.pvalue_vs_persistence or float("nan"), 4),
        "gate": verdict.promote,
        "fit_s": round(result.timings["fit_s"], 1),
        "total_s": round(time.monotonic() - t0, 1),
    }
    if "oracle" in frame:
        oracle_scores = scores_of(frame, "oracle")
        row["oracle_rmse_bp"] = round(oracle_scores.rmse, 3)
        row["oracle_skill"] = round(1 - oracle_scores.rmse / persistence.rmse, 4)
    return row


def tape_bars(tape_dir: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(tape_dir.glob("*.csv.gz")):
        df = pd.read_csv(path)
        df["symbol"] = path.name.split(".")[0]
        df["ts"] = pd.to_datetime(df["ts"], utc=True)
        frames.append(df)
    out = pd.concat(frames, ignore_index=True)
    out["source"] = "tape"
    out["ingested_at"] = pd.Timestamp.now(tz="UTC")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--symbols", type=int, default=5)
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--tape-dir", type=Path, default=PROJECT_ROOT.parent / "shared" / "data" / "tape")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train.json")
    args = ap.parse_args()

    cycle = retrain_cycle_benchmark(args.symbols, args.days)
    rows = []
    for phi in (0.4, 0.0):
        syms = [f"P{i}" for i in range(args.symbols)]
        market = SyntheticMarket(33, syms, {}, phi, null_fraction=0.0)
        rows.append(
            skill_row(f"synthetic phi={phi}", lake_frame(market, syms, args.days, time.time()), oracle_function(market))
        )
    if args.tape_dir.is_dir():
        rows.append(skill_row("real tape (2013-10, 6 sessions)", tape_bars(args.tape_dir)))

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "benchmark": "train",
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "retrain_cycle": cycle,
        "skill": rows,
        "peak_rss_mib": round(peak_mib),
        "targets": {"cycle_s": 90, "fit_s": 60},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")

    c = cycle
    print(f"machine: {os.cpu_count()} CPUs, {platform.platform()}")
    print(
        f"retrain cycle, {c['symbols']} symbols x {c['days']} days ({c['bars']} bars): {c['cycle_s']} s "
        f"(target <= 90 s) -> {c['cycle_outcome']}: {c['cycle_message']}"
    )
    print(
        "  steps (s): "
        + ", ".join(f"{k} {v}" for k, v in c["steps_s"].items())
        + f"  (fit target <= 60 s; {c['epochs_run']} epochs, {c['n_train']} training windows)"
    )
    print(f"peak RSS: {result['peak_rss_mib']} MiB")
    print(
        f"{'data':34} {'model bp':>9} {'persist bp':>10} {'oracle bp':>9} {'skill':>7} {'oracle sk':>9} "
        f"{'dir':>5} {'DM p':>7} gate"
    )
    for r in rows:
        print(
            f"{r['data']:34} {r['model_rmse_bp']:9.3f} {r['persistence_rmse_bp']:10.3f} "
            f"{r.get('oracle_rmse_bp', float('nan')):9.3f} {r['skill']:7.4f} "
            f"{r.get('oracle_skill', float('nan')):9.4f} "
            f"{r['direction']:5.3f} {r['dm_p']:7.4f} {'yes' if r['gate'] else 'no'}"
        )
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
