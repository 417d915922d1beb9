"""Does RL heal at the demo's scale, for some setting? A search on the RL side of a demo's stage-1 run, each setting
over several seeds beside the matched SFT control: the same start, the same number of steps, GRPO's learning rate.

The settings vary one knob at a time around the demo's GRPO (learning rate, steps, group size, temperature, KL
coefficient, the start: the last checkpoint or the OOD peak). Every run is a real `healer run` in the demo's home,
evaluated on the same 500 ID and OOD items at each checkpoint; a setting *beats* its control on a seed when its OOD
after RL is higher and McNemar's exact test on the paired items gives p < 0.05 (the demo's rl-heals verdict,
`healer.verdicts.rl_heals`). A setting the demo could adopt beats its control on every seed.

    .venv/bin/python benchmarks/heal_search.py --home /tmp/demo-home [--sft RUN] [--seeds 0 1 2] [--only demo lr3e-4]

Prints one Markdown row per setting and seed, then the settings that beat the control on every seed (or that none
did); exits 0. The runs stay in the home's store (`healer tui --db HOME/healer.db` shows them); a second call
reuses the finished runs of the same name.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from healer.stats import wilson
from healer.store import Status, Store
from healer.store.views import Reader
from healer.verdicts import Verdict, rl_heals

CONTROL = ["train.lr=1e-4", "train.warmup_steps=5", "train.save_steps=25"]  # as the demo's control


@dataclass(frozen=True)
class Setting:
    name: str
    overrides: tuple[str, ...] = ()
    pick: str = "last"
    steps: int = 100

    def rl(self) -> list[str]:
        return [*self.overrides, f"train.max_steps={self.steps}", f"train.save_steps={self.steps // 4}"]


SETTINGS = [
    Setting("demo"),  # lr 1e-4, 100 steps, 8 completions per prompt, temperature 1.0, no KL: what the demo runs
    Setting("lr3e-4", ("train.lr=3e-4",)),
    Setting("lr3e-5", ("train.lr=3e-5",)),
    Setting("steps200", steps=200),
    Setting("group16", ("rl.num_generations=16",)),
    Setting("temp1.3", ("rl.temperature=1.3",)),
    Setting("kl0.04", ("rl.beta=0.04",)),
    Setting("from-peak", pick="peak-ood"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="a home where `healer demo` ran")
    parser.add_argument("--sft", help="the stage-1 run (default: the newest finished tiny-sft run there)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", help="these settings only", choices=[s.name for s in SETTINGS])
    args = parser.parse_args()
    os.environ["HEALER_HOME"] = str(args.home.resolve())
    os.environ.pop("HEALER_DB", None)
    db = args.home.resolve() / "healer.db"
    sft = int(args.sft) if args.sft else newest_sft(db)
    settings = [s for s in SETTINGS if not args.only or s.name in args.only]
    started = time.perf_counter()
    rows, beats = [], {}
    for setting in settings:
        for seed in args.seeds:
            rl = run("tiny-grpo", f"search-{setting.name}-s{seed}", f"{sft}@{setting.pick}",
                     [*setting.rl(), f"seed={seed}"])  # fmt: skip
            matched = [*CONTROL, f"train.max_steps={setting.steps}", f"seed={seed}"]
            control = run("tiny-sft", f"search-control-{setting.pick}-{setting.steps}-s{seed}",
                          f"{sft}@{setting.pick}", matched)  # fmt: skip
            reader = Reader(db)
            verdict = rl_heals((rl, reader.evals(rl)), (control, reader.evals(control)), reader.eval_items)
            beat = verdict.shown is True
            beats.setdefault(setting.name, []).append(beat)
            rows.append(row(reader, setting, seed, rl, control, verdict))
            print(f"{setting.name} seed {seed}: {'beats' if beat else 'does not beat'} the control "
                  f"({time.perf_counter() - started:.0f} s so far)", file=sys.stderr, flush=True)  # fmt: skip
    print(f"heal search on run {sft} ({db}), seeds {', '.join(map(str, args.seeds))}\n")
    print("| setting | start | seed | OOD at start | OOD after RL [95% CI] | OOD after control [95% CI] | RL − control "
          "| only RL / only control | McNemar p | beats |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(rows))
    adopted = [name for name, seen in beats.items() if all(seen)]
    print()
    if adopted:
        print(f"beats the control on every seed: {', '.join(adopted)}")
    else:
        print("no setting beats its SFT control on every seed: "
              + ", ".join(f"{name} {sum(seen)}/{len(seen)}" for name, seen in beats.items()))  # fmt: skip
    print(f"total time {time.perf_counter() - started:.0f} s")


def newest_sft(db: Path) -> int:
    with Store(db) as store:
        done = [r for r in store.runs(status=[Status.DONE]) if r.name == "tiny-sft"]
    if not done:
        sys.exit(f"{db}: no finished tiny-sft run; run `healer demo --home {db.parent}` first")
    return done[-1].id


def run(preset: str, name: str, start: str, overrides: list[str]) -> int:
    """A finished run of this name in the store, or a new `healer run` of it; its id."""
    with Store(Path(os.environ["HEALER_HOME"]) / "healer.db") as store:
        for earlier in reversed(store.runs(status=[Status.DONE])):
            if earlier.name == name:
                return earlier.id
    command = [sys.executable, "-m", "healer", "run", preset, "--name", name, "--from", start, "--quiet", "--json"]
    for override in overrides:
        command += ["--set", override]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"healer run {preset} --name {name} exited {done.returncode}: {done.stderr[-2000:]}")
    return int(json.loads(done.stdout)["id"])


def row(reader: Reader, setting: Setting, seed: int, rl: int, control: int, verdict: Verdict) -> str:
    def ood(run_id: int, last: bool) -> tuple[int, int]:
        evals = [e for e in reader.evals(run_id) if e.split == "ood" and e.protocol == "single"]
        chosen = max(evals, key=lambda e: e.step) if last else min(evals, key=lambda e: e.step)
        return chosen.correct, chosen.n

    def pct(correct: int, n: int) -> str:
        low, high = wilson(correct, n)
        return f"{100 * correct / n:.1f} [{100 * low:.1f}, {100 * high:.1f}]"

    start, after, versus = ood(rl, last=False), ood(rl, last=True), ood(control, last=True)
    diff = 100 * (after[0] / after[1] - versus[0] / versus[1])
    found = re.search(r"(\d+) items right only .*?, (\d+) only", verdict.evidence)
    flips = f"{found[1]} / {found[2]}" if found else ""
    p = f"{verdict.p_value:.2g}" if verdict.p_value is not None else ""
    return (f"| {setting.name} | {setting.pick} | {seed} | {100 * start[0] / start[1]:.1f} | {pct(*after)} | "
            f"{pct(*versus)} | {diff:+.1f} | {flips} | {p} | {'yes' if verdict.shown else 'no'} |")  # fmt: skip


if __name__ == "__main__":
    main()
