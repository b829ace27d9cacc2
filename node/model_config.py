"""What a worker (and, through it, the coordinator) needs to know about a model directory."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from node.architectures import text_config, unsupported_reason


# A directory holding this file is a per-node shard (deploy/shards.py cuts them): config.json is the
# full model's, but the weights cover only the layers the manifest names.
SHARD_MANIFEST = "boltpipe-shard.json"


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
    config: dict            # config.json as it is
    shard_layers: tuple[int, int] | None = None  # [start, end) a shard holds; None for a full model

    @property
    def text_config(self) -> dict:
        """The decoder's settings (a vision-language checkpoint nests them in text_config)."""
        return text_config(self.config)

    @property
    def is_shard(self) -> bool:
        return self.shard_layers is not None

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
    if not isinstance(config, dict):
        raise ModelDirError(f"{config_file} is not a JSON object")
    model_type = config.get("model_type")
    if (why := unsupported_reason(model_type)) is not None:
        raise ModelDirError(f"{path}: {why}")
    if not list(path.glob("model*.safetensors")):
        raise ModelDirError(f"{path} holds no model*.safetensors weight files")
    text = text_config(config)
    try:
        info = ModelInfo(
            path=path,
            model_type=model_type,
            num_layers=int(text["num_hidden_layers"]),
            hidden_size=int(text["hidden_size"]),
            vocab_size=int(text["vocab_size"]),
            tie_word_embeddings=bool(text.get("tie_word_embeddings", True)),
            max_position_embeddings=text.get("max_position_embeddings"),
            config=config,
        )
    except KeyError as exc:
        raise ModelDirError(f"{config_file} lacks the field {exc.args[0]!r}") from exc
    if (path / SHARD_MANIFEST).is_file():
        info = replace(info, shard_layers=_shard_layers(path / SHARD_MANIFEST, info.num_layers))
    return info


def _shard_layers(manifest: Path, num_layers: int) -> tuple[int, int]:
    """The layer range a shard's manifest declares, checked against the model's config."""
    try:
        data = json.loads(manifest.read_text())
        start, end, total = data["layer_start"], data["layer_end"], data["num_layers"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelDirError(f"{manifest} is not a valid shard manifest ({exc!r}); cut the shard again") from exc
    if not all(type(v) is int for v in (start, end, total)) or not 0 <= start < end <= total:
        raise ModelDirError(f"{manifest}: layer range [{start}, {end}) of {total} layers is invalid; "
                            "cut the shard again")
    if total != num_layers:
        raise ModelDirError(f"{manifest} was cut from a model of {total} layers but config.json declares "
                            f"{num_layers}; the shard and its config do not belong together: cut the shard again")
    return start, end
