"""train.toml: the training settings, validated like mixture.toml (every problem at once)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from curate.config import unknown_key
from curate.errors import ConfigError, Problem


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    base_model: str | None = None  # a model folder, a .gguf file or a hub id (or --base)
    chat_template: str | None = None  # the template override the build used, if any
    trust_remote_code: bool = False
    # QLoRA (NF4 + double quantization, bf16 compute); None: chosen by device (see sizing)
    quantize: bool | None = None
    r: int = Field(16, gt=0)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"
    learning_rate: float = Field(2e-4, gt=0)
    scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = -1  # > 0 overrides epochs
    # tokens per micro-batch (the packs' capacity); None: chosen by device and free memory
    batch_tokens: int | None = Field(None, gt=0)
    grad_accum: int = Field(1, gt=0)
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    eval_steps: int = Field(50, gt=0)
    save_steps: int = Field(50, gt=0)
    save_total_limit: int = Field(3, gt=0)  # rolling checkpoints
    early_stopping_patience: int = Field(0, ge=0)  # evals without improvement; 0: off
    seed: int = Field(0, ge=0, lt=2**32)
    report_to: str | list[str] = "none"  # passed to transformers: mlflow, wandb, tensorboard
    logging_steps: int = Field(1, gt=0)

    def fingerprint_fields(self) -> dict[str, Any]:
        """What makes a run what it is (the run id hashes these)."""
        return self.model_dump(exclude={"report_to", "logging_steps"})


def load_train_config(path: str | Path | None, **overrides: Any) -> TrainConfig:
    raw: dict[str, Any] = {}
    file = None
    if path is not None:
        file = str(path)
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                [Problem("train.toml", f"cannot read: {exc.strerror}")], file
            ) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([Problem("train.toml", f"not valid TOML: {exc}")], file) from exc
        raw = raw.get("train", raw)
        base = Path(path).parent
        for key in ("base_model", "chat_template"):
            value = raw.get(key)
            if isinstance(value, str) and not Path(value).is_absolute() and (base / value).exists():
                raw[key] = str(base / value)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return TrainConfig(**raw)
    except ValidationError as exc:
        # one problem per key (a union type reports each alternative: joined)
        found: dict[str, tuple[list[str], Any]] = {}
        for err in exc.errors():
            key = str(err["loc"][0]) if err["loc"] else "train"
            messages, _ = found.setdefault(key, ([], err.get("input")))
            msg = (
                unknown_key(TrainConfig, err["loc"])
                if err["type"] == "extra_forbidden"
                else err["msg"]
            )
            if msg not in messages:
                messages.append(msg)
        problems = [Problem(k, " or ".join(m), v) for k, (m, v) in found.items()]
        raise ConfigError(problems, file) from exc
