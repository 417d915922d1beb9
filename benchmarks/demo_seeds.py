"""The demo over several seeds: what its numbers are on each, their mean and spread, and on how many seeds each of
the paper's claims was shown. The README's numbers come from this script, not from one run.

Each seed runs `healer demo --seed S --json` in its own home (stage 0 included: a seed changes its data order too),
one after another, or reads the homes of an earlier call (`--reuse`).

    .venv/bin/python benchmarks/demo_seeds.py --out /tmp/demo-seeds [--seeds 0 1 2] [--quick] [--reuse]

Prints a Markdown table (one row per number, a column per seed, mean ± sd) and the verdict counts; exits 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from healer.evals import by_step
from healer.store.views import Reader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a directory for one demo home per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="run `healer demo --quick`")
    parser.add_argument("--reuse", action="store_true", help="read the demos an earlier call left in --out")
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        home = args.out / f"seed-{seed}"
        document = home / "demo.json"
        if not (args.reuse and document.exists()):
            home.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, "-m", "healer", "demo", "--home", str(home), "--seed", str(seed), "--json"]
            command += ["--quick"] if args.quick else []
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            (home / "demo.log").write_text(done.stderr)
            if not done.stdout.strip():
                sys.exit(f"seed {seed}: the demo printed no JSON (exit {done.returncode}); see {home / 'demo.log'}")
            document.write_text(done.stdout)
            print(f"seed {seed}: demo finished in {time.perf_counter() - started:.0f} s (exit {done.returncode})",
                  file=sys.stderr)  # fmt: skip
        results.append(numbers(json.loads(document.read_text())))
    print(table(args.seeds, results))


def numbers(demo: dict[str, Any]) -> dict[str, Any]:
    """The demo's headline numbers, in percent (accuracies) or degrees, read from its store."""
    reader, runs = Reader(Path(demo["database"])), demo["runs"]
    sft = by_step(reader.evals_of([runs["stage1"]])[runs["stage1"]], "single")
    last, start = max(sft), min(sft)
    peak = max((s for s in sft if s != start), key=lambda s: sft[s]["ood"].accuracy)

    def after(run_id: int) -> float:
        table = by_step(reader.evals_of([run_id])[run_id], "single")
        return 100 * table[max(table)]["ood"].accuracy

    edit = by_step(reader.evals_of([runs["edit"]])[runs["edit"]], "single")
    edit = edit[max(edit)]
    spectra = {s.step: s for s in reader.run_detail(runs["stage1"]).spectra}
    result = {
        "stage-0 OOD (the start of SFT)": 100 * sft[start]["ood"].accuracy,
        "OOD at SFT's first checkpoint after the start": 100 * sft[min(s for s in sft if s != start)]["ood"].accuracy,
        "OOD at SFT's end": 100 * sft[last]["ood"].accuracy,
        "ID at SFT's end": 100 * sft[last]["id"].accuracy,
        "step of the OOD peak after the start": peak,
        "Δ OOD, GRPO from the OOD peak": after(runs["rl"][0]) - 100 * sft[peak]["ood"].accuracy,
        "Δ OOD, GRPO from the last checkpoint": after(runs["rl"][1]) - 100 * sft[last]["ood"].accuracy,
        "Δ OOD, the SFT control from the last checkpoint": after(runs["control"]) - 100 * sft[last]["ood"].accuracy,
        "OOD after the edit": 100 * edit["ood"].accuracy,
        "ID after the edit": 100 * edit["id"].accuracy,
        "mean angle at SFT's end (°)": spectra[last].mean_angle_deg,
        "σ drift at SFT's end (%)": 100 * spectra[last].sigma_rel_drift,
    }
    result["verdicts"] = {v["claim"]: v["shown"] for v in demo["verdicts"]}
    return result


def table(seeds: list[int], results: list[dict[str, Any]]) -> str:
    lines = ["| number | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± sd |",
             "|---|" + "---:|" * (len(seeds) + 1)]  # fmt: skip
    for key in results[0]:
        if key == "verdicts":
            continue
        values = [r[key] for r in results]
        shown = [f"{v:.1f}" if isinstance(v, float) else str(v) for v in values]
        numeric = [float(v) for v in values if v is not None]
        spread = statistics.stdev(numeric) if len(numeric) > 1 else 0.0
        lines.append(f"| {key} | " + " | ".join(shown) + f" | {statistics.mean(numeric):.1f} ± {spread:.1f} |")
    lines += ["", "| claim | " + " | ".join(f"seed {s}" for s in seeds) + " | shown on |",
              "|---|" + "---|" * (len(seeds) + 1)]  # fmt: skip
    for claim in results[0]["verdicts"]:
        marks = [{True: "shown", False: "not shown", None: "untested"}[r["verdicts"].get(claim)] for r in results]
        count = sum(r["verdicts"].get(claim) is True for r in results)
        lines.append(f"| {claim} | " + " | ".join(marks) + f" | {count} of {len(results)} seeds |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
