"""The model file: one safetensors file whose header carries our JSON metadata.

Layout (the safetensors format): 8-byte little-endian header length, a JSON
header, then raw tensor bytes. Our metadata sits in the header under
``__metadata__["vae_anomaly"]``: format version, config, preprocessing state,
schema, threshold, training summary, versions and a SHA-256 of the tensors.

Loading parses JSON and raw numbers only; nothing in the file is executed.
Files are written atomically, so a failed save never destroys an older model.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError

from .errors import ModelFileError

if TYPE_CHECKING:
    import torch

FORMAT_NAME = "vae-anomaly-model"
# 2: quantile-mapped numeric columns; 3: the calibration fits' parameter and counts;
# 4: the confirmed anomalies' counts. Files of formats 1 to 3 still load.
FORMAT_VERSION = 4
_METADATA_KEY = "vae_anomaly"
_MAX_HEADER_BYTES = 100_000_000


def model_to_bytes(metadata: dict, tensors: dict[str, torch.Tensor | np.ndarray]) -> bytes:
    """Serialise metadata (JSON-compatible) and tensors into the model-file bytes."""
    import torch
    from safetensors.torch import save as save_tensors

    # numpy arrays too: what read_model returns can be written back.
    tensors = {name: (torch.from_numpy(np.array(t)) if isinstance(t, np.ndarray) else t)
               .detach().cpu().contiguous() for name, t in tensors.items()}
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "tensor_sha256": _tensor_digest(tensors), **metadata}
    return save_tensors(tensors, metadata={_METADATA_KEY: json.dumps(header)})


def write_model(path: str | os.PathLike, metadata: dict,
                tensors: dict[str, torch.Tensor | np.ndarray]) -> None:
    from .data import atomic_output  # writing needs pyarrow's module; reading does not

    payload = model_to_bytes(metadata, tensors)
    with atomic_output(path, "wb") as stream:
        stream.write(payload)


def read_model(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a model file; raise ModelFileError with the reason and the fix.
    The tensors come as numpy arrays: `info` reads a model without importing torch,
    and `score` without safetensors' torch module."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}; train one with "
                             "`vae-anomaly fit DATA.csv` or pass --model PATH")
    if path.is_dir():
        raise ModelFileError(f"{path} is a directory, not a model file; pass the file's path")
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc.strerror}") from None
    return model_from_bytes(payload, name=path.name)


def model_from_bytes(payload: bytes,
                     name: str = "the model") -> tuple[dict, dict[str, np.ndarray]]:
    """Parse model-file bytes (e.g. sent to a worker) with the same checks as read_model."""
    from safetensors.numpy import load as load_tensors

    header = _parse_header(payload, name)
    metadata = _our_metadata(header, name)
    try:
        tensors = load_tensors(payload)
    except (SafetensorError, ValueError, RuntimeError):
        raise ModelFileError(f"{name} is truncated or corrupt; fit the model again") from None
    if _tensor_digest(tensors) != metadata.get("tensor_sha256"):
        raise ModelFileError(f"{name} is corrupt (its weights fail the checksum); "
                             "fit the model again")
    return metadata, tensors


def _parse_header(payload: bytes, name: str) -> dict:
    not_ours = ModelFileError(f"{name} is not a vae-anomaly model file; "
                              "pass a file written by `vae-anomaly fit`")
    if len(payload) < 8:
        raise ModelFileError(f"{name} is truncated or not a model file ({len(payload)} bytes); "
                             "fit the model again") if payload else \
            ModelFileError(f"{name} is empty (0 bytes); fit the model again")
    (length,) = struct.unpack("<Q", payload[:8])
    if length > _MAX_HEADER_BYTES or payload[8:9] != b"{":
        raise not_ours
    if 8 + length > len(payload):
        raise ModelFileError(f"{name} is truncated or corrupt; fit the model again")
    try:
        return json.loads(payload[8:8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise not_ours from None


def _our_metadata(header: dict, name: str) -> dict:
    raw = (header.get("__metadata__") or {}).get(_METADATA_KEY)
    try:
        metadata = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{name} is not a vae-anomaly model file (a safetensors file "
                             "from elsewhere?); pass a file written by `vae-anomaly fit`")
    version = metadata.get("format_version")
    if type(version) is not int or version < 1:  # bool is an int subclass: refuse it too
        raise ModelFileError(f"{name} has no valid format version; fit the model again")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{name} uses model format {version}, newer than this vae-anomaly reads "
            f"({FORMAT_VERSION}); upgrade with `pip install -U vae-anomaly`")
    return metadata


def _tensor_digest(tensors: dict) -> str:
    """SHA-256 over each tensor's name, dtype (torch's name for it), shape and bytes:
    the same for torch tensors and for the numpy arrays `info` reads."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        dtype, shape, raw = _tensor_bytes(tensors[name])
        digest.update(name.encode())
        digest.update(dtype.encode() + str(shape).encode())
        digest.update(raw)
    return digest.hexdigest()


def _tensor_bytes(tensor) -> tuple[str, tuple, bytes]:
    if isinstance(tensor, np.ndarray):
        return f"torch.{tensor.dtype.name}", tuple(tensor.shape), \
            np.ascontiguousarray(tensor).tobytes()
    import torch  # already loaded: the tensor is a torch tensor

    tensor = tensor.contiguous()
    raw = tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
    return str(tensor.dtype), tuple(tensor.shape), raw
