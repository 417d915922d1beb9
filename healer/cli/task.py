"""`healer task check|solve|stats|sample|ls`: the GeneralPoints verifier and solver, and the tasks healer knows."""

from typing import Annotated

import typer

from healer.cli.common import App, Column, WideOption, out, print_json, print_table, show_wide
from healer.errors import HealerError
from healer.presets import TaskSpec
from healer.tasks import DESCRIPTIONS, task_names
from healer.tasks.formula import format_value
from healer.tasks.general_points import (
    MAX_CARDS,
    MIN_CARDS,
    PROMPTS,
    RULES,
    GeneralPoints,
    card_name,
    check_rule,
    judge_formula,
    parse_cards,
)

app = App(help="Tasks: check and solve GeneralPoints hands, count solvable hands, show prompts.")


JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of text")]
CardsOption = Annotated[str, typer.Option("--cards", help='the hand, e.g. "3 3 8 8" or "A,5,J,K" (A, 2..10, J, Q, K)')]
RuleOption = Annotated[str, typer.Option("--rule", help="id (J, Q, K count as 10) or ood (they count as 11, 12, 13)")]
NCardsOption = Annotated[int, typer.Option("--n-cards", help="cards per hand (2 to 6)")]
TargetOption = Annotated[int, typer.Option("--target", help="the value the formula must reach")]


def _task(n_cards: int, target: int, prompt: str = "paper-v1") -> GeneralPoints:
    if not MIN_CARDS <= n_cards <= MAX_CARDS:
        raise HealerError(f"--n-cards must be between {MIN_CARDS} and {MAX_CARDS}, got {n_cards}")
    if target < 1:
        raise HealerError(f"--target must be at least 1, got {target}")
    if prompt not in PROMPTS:
        raise HealerError(f"--prompt {prompt!r} is not a known prompt version ({', '.join(PROMPTS)})")
    return GeneralPoints.from_spec(TaskSpec(name="general_points", n_cards=n_cards, target=target, prompt=prompt))


@app.command("check")
def check(
    cards: CardsOption,
    formula: Annotated[str, typer.Option("--formula", help='the formula to judge, e.g. "8/(3-8/3)"')],
    rule: RuleOption = "id",
    n_cards: NCardsOption = 4,
    target: TargetOption = 24,
    json_out: JsonOption = False,
) -> None:
    """Judge a formula for a hand: the outcome and the RL reward from the default reward table."""
    task = _task(n_cards, target)
    check_rule(rule)
    ranks = parse_cards(cards, n_cards)
    values = task.values(ranks, rule)
    verdict = judge_formula(formula, values, target, task.solve(ranks, rule))
    score = verdict.score(task.reward)
    result = {"outcome": score.outcome, "reward": score.reward, "feedback": score.feedback}
    if verdict.value is not None:
        result["value"] = format_value(verdict.value)
    if json_out:
        print_json(result)
        return
    value = f" (value {result['value']})" if "value" in result else ""
    out.print(f"{score.outcome}  reward {score.reward:g}{value}", markup=False)
    if score.feedback:
        out.print(score.feedback, markup=False)


@app.command("solve")
def solve(
    cards: CardsOption,
    rule: RuleOption = "id",
    n_cards: NCardsOption = 4,
    target: TargetOption = 24,
    json_out: JsonOption = False,
) -> None:
    """Say whether a hand is solvable under a rule and list its solutions."""
    task = _task(n_cards, target)
    check_rule(rule)
    ranks = parse_cards(cards, n_cards)
    found = task.solve(ranks, rule)
    values = list(task.values(ranks, rule))
    if json_out:
        print_json(
            {
                "cards": [card_name(r) for r in ranks],
                "values": values,
                "solvable": bool(found),
                "solutions": list(found),
            }
        )
        return
    shown = " ".join(map(str, values))
    if not found:
        out.print(f"no solution: {shown} cannot make {target} under the {rule} rule", markup=False)
        return
    out.print(f"solvable: {shown} makes {target} in {len(found)} ways", markup=False)
    for text in found:
        out.print(f"  {text}", markup=False)


@app.command("stats")
def stats(
    rule: RuleOption = "id",
    n_cards: NCardsOption = 4,
    target: TargetOption = 24,
    json_out: JsonOption = False,
) -> None:
    """Count the distinct hands (rank multisets; OOD: with a face card) and how many are solvable under a rule."""
    counted = _task(n_cards, target).stats(rule)
    share = counted.solvable / counted.hands if counted.hands else 0.0
    if json_out:
        print_json(
            {"rule": rule, "n_cards": n_cards, "target": target, "hands": counted.hands, "solvable": counted.solvable}
        )
        return
    counts = f"{counted.solvable} of {counted.hands} distinct hands are solvable ({share:.1%})"
    out.print(f"{rule} rule, {n_cards} cards, target {target}: {counts}", markup=False)


@app.command("sample")
def sample(
    split: Annotated[str, typer.Option("--split", help="id or ood")] = "id",
    n: Annotated[int, typer.Option("--n", help="how many episodes")] = 5,
    prompt: Annotated[str, typer.Option("--prompt", help=f"prompt version: {', '.join(PROMPTS)}")] = "paper-v1",
    seed: Annotated[int, typer.Option("--seed", help="seed of the evaluation set (task.eval_seed)")] = 0,
    n_cards: NCardsOption = 4,
    target: TargetOption = 24,
    json_out: JsonOption = False,
) -> None:
    """Print the first episodes of a fixed evaluation set: cards, prompt and a reference answer."""
    if split not in RULES:
        raise HealerError(f"unknown split {split!r}; use id or ood")
    if n < 1:
        raise HealerError(f"--n must be at least 1, got {n}")
    examples = _task(n_cards, target, prompt).eval_examples(split, n, seed)
    if json_out:
        print_json([{"prompt": e.prompt, "answer": e.answer, "split": e.split, **e.meta} for e in examples])
        return
    for index, example in enumerate(examples):
        names, values = " ".join(example.meta["names"]), " ".join(map(str, example.meta["values"]))
        out.print(f"--- {split} episode {index}: cards {names} (values {values})", markup=False)
        out.print(example.prompt, markup=False)
        out.print(f"--- reference answer\n{example.answer}", markup=False)


@app.command("ls")
def ls(wide: WideOption = False, json_out: JsonOption = False) -> None:
    """List the tasks a preset's task.name can choose."""
    show_wide(wide)
    rows = [{"name": name, "description": DESCRIPTIONS[name]} for name in task_names()]
    if json_out:
        print_json(rows)
        return
    print_table(["name", Column("description", fold=True)], [[r["name"], r["description"]] for r in rows])


def register(root: App) -> None:
    root.add_typer(app, name="task")
