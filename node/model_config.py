"""What a worker (and, through it, the coordinator) needs to know about a model directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# mlx-lm architectures whose decoder has the plain shape the stage runner relies on:
# embed_tokens -> layers -> norm -> lm_head (or tied embeddings).
SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")


class ModelDirError(ValueError):
    """A model directory that cannot be served; the message says why and what to do."""


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    model_type: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    tie_word_embeddings: bool
    max_position_embeddings: int | None
    config: dict

    @property
    def has_chat_template(self) -> bool:
        cfg = self.path / "tokenizer_config.json"
        if not cfg.is_file():
            return False
        return bool(json.loads(cfg.read_text()).get("chat_template"))


def read_model_info(path: str | Path) -> ModelInfo:
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelDirError(f"model directory {path} does not exist")
    config_file = path / "config.json"
    if not config_file.is_file():
        hint = " (a .gguf file? import it first: cluster import-gguf FILE OUTDIR)" if path.suffix == ".gguf" else ""
        raise ModelDirError(f"{path} is not a model directory: config.json is missing{hint}")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ModelDirError(f"{config_file} is not valid JSON: {exc}") from exc
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ModelDirError(
            f"{path}: model_type {model_type!r} is not supported; "
            f"supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if not list(path.glob("model*.safetensors")):
        raise ModelDirError(f"{path} holds no model*.safetensors weight files")
    try:
        return ModelInfo(
            path=path,
            model_type=model_type,
            num_layers=int(config["num_hidden_layers"]),
            hidden_size=int(config["hidden_size"]),
            vocab_size=int(config["vocab_size"]),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", True)),
            max_position_embeddings=config.get("max_position_embeddings"),
            config=config,
        )
    except KeyError as exc:
        raise ModelDirError(f"{config_file} lacks the field {exc.args[0]!r}") from exc
