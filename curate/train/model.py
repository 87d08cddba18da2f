"""Loading the base model (plain, or 4-bit NF4 through bitsandbytes) and its tokenizer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from curate.errors import UserError


def plain_copy(gguf: Path, cache_dir: Path) -> Path:
    """A .gguf model as a plain transformers folder (weights dequantized to fp32), made once.

    transformers loads .gguf files but cannot quantize or train them as such; the copy is
    keyed by the file's sha256 and written atomically (temp folder + rename).
    """
    from curate.fsio import atomic_path, sha256_file

    target = cache_dir / sha256_file(gguf)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with quiet_loading():  # a progress bar per tensor otherwise floods the terminal
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(target, is_dir=True) as tmp, quiet_loading():
            model.save_pretrained(str(tmp))
            tokenizer.save_pretrained(str(tmp))
    except OSError:  # another process made it first
        pass
    return target


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' progress bars and info logs off while loading or saving weights
    (curate reports what it does itself; stdout is for --json)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(was)
        hf_logging.enable_progress_bar()


def resolve_base(path: str, cache_dir: Path) -> Path:
    """The base model as a local folder: a folder as is, a .gguf file through a plain copy,
    an offline model's name (`curate models`) as its file, a hub id through the hub cache
    (online, or already downloaded)."""
    local = Path(path)
    if not local.exists():
        from curate.train.offline import offline_path

        local = offline_path(path) or local  # `--base smollm2`: the model curate installs
    if local.is_file() and local.suffix == ".gguf":
        return plain_copy(local, cache_dir / "models")
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(f"base model: {path} holds no config.json")
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path))
    except Exception as exc:
        raise UserError(
            f"base model: cannot load {path!r}: {exc}. Give a local model folder, a .gguf "
            "file, or a hub id while online."
        ) from exc


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    folder: Path, quantize: bool, trust_remote_code: bool = False, attn: str = "sdpa"
) -> Any:
    """The causal LM: NF4 with double quantization and bf16 compute when `quantize`
    (bitsandbytes; its CPU path is slow but real), else fp32 on CPU / bf16 on CUDA."""
    import torch
    from transformers import AutoModelForCausalLM

    where = device()
    kwargs: dict[str, Any] = {
        "attn_implementation": attn,
        "trust_remote_code": trust_remote_code,
        "device_map": {"": where},
    }
    if quantize:
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError as exc:
            raise UserError(
                "QLoRA needs bitsandbytes: pip install 'curate[train]' (or --no-quantize)"
            ) from exc
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["dtype"] = torch.bfloat16
    else:
        kwargs["dtype"] = torch.bfloat16 if where == "cuda" else torch.float32
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    # With a cache, transformers does not look for packed sequences in the position ids and
    # lets packed examples attend to each other: training never uses one.
    model.config.use_cache = False
    return model
