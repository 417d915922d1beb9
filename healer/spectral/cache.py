"""The reference's decompositions, computed once and kept on disk, one file per matrix content and rank count.

The key is the matrix's bytes (CRC-32 and Adler-32 over them, with shape and dtype), not its path: a reference
re-saved elsewhere is found again, a changed one never is, and the same base model shared by many runs is
decomposed once.
"""

from __future__ import annotations

import json
import os
import threading
import zlib
from pathlib import Path

import torch

from healer.spectral.linalg import TopK

VERSION = 1  # bump when what is stored changes


def content_key(tensor: torch.Tensor) -> str:
    raw = tensor.detach().contiguous().cpu().view(torch.uint8).numpy()
    shape = "x".join(map(str, tensor.shape))
    dtype = str(tensor.dtype).removeprefix("torch.")
    return f"{shape}-{dtype}-{zlib.crc32(raw):08x}{zlib.adler32(raw):08x}"


class ReferenceCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _file(self, key: str, q: int) -> Path:
        return self.directory / f"v{VERSION}" / key[-4:] / f"{key}-q{q}.safetensors"

    def get(self, key: str, q: int) -> TopK | None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self._file(key, q)
        if not path.exists():
            return None
        try:
            t = load_file(str(path))
        except (SafetensorError, OSError):
            return None  # a damaged entry (a full disk mid-write, ...) is computed again
        s = t["s"]
        return TopK(t["u"], s[:q], t["v"], float(s[q]) if len(s) > q else None)  # vectors as stored: float32

    def put(self, key: str, q: int, top: TopK) -> None:
        from safetensors.torch import save_file

        path = self._file(key, q)
        path.parent.mkdir(parents=True, exist_ok=True)
        s = top.s if top.next_s is None else torch.cat([top.s, top.s.new_tensor([top.next_s])])
        partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")  # threads too
        vectors = {"u": top.u.float().cpu().contiguous(), "v": top.v.float().cpu().contiguous()}  # float32: half
        save_file({**vectors, "s": s.double().cpu().contiguous()}, str(partial))
        partial.replace(path)  # readers see a whole file or none

    def keys(self, files: list[Path]) -> KeyBook:
        """The content keys already computed for these weight files, by parameter (see KeyBook)."""
        identity = "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
        name = f"{zlib.crc32(identity.encode()):08x}{zlib.adler32(identity.encode()):08x}.json"
        return KeyBook(self.directory / f"v{VERSION}" / "keys" / name, identity)


class KeyBook:
    """Content keys of one reference's matrices, remembered by the files' path, size and modification time, so
    reading a reference again does not checksum its bytes again (a rewritten file has a new time: checksummed)."""

    def __init__(self, path: Path, identity: str) -> None:
        self.path, self.identity, self.changed = path, identity, False
        self.known: dict[str, str] = {}
        try:
            saved = json.loads(path.read_text())
            if saved.get("identity") == identity:
                self.known = dict(saved["keys"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or damaged: computed again

    def key(self, param: str, tensor: torch.Tensor) -> str:
        if param not in self.known:
            self.known[param] = content_key(tensor)
            self.changed = True
        return self.known[param]

    def save(self) -> None:
        if not self.changed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f"{self.path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"identity": self.identity, "keys": self.known}))
        partial.replace(self.path)
        self.changed = False
