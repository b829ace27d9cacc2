"""GGUF import: turn a llama.cpp / Ollama GGUF into an mlx-lm model directory.

`import_gguf(src, dst)` writes config.json (the mlx-lm model type of the file's architecture, with
mlx-lm's quantization block), model*.safetensors (Hugging Face tensor names; block-quantized tensors
as MLX affine or mxfp4 arrays, repacked where the format allows, else through `gguf`'s dequantization),
tokenizer.json + tokenizer_config.json rebuilt from the GGUF vocabulary, and boltpipe_import.json
(source name, size, sha256, importer version) as a cache marker.

OUTDIR policy: created if missing; an empty directory is used; a previous import of the same file
(same size + sha256) by this importer version is left as is (summary.skipped); by an older version it
is rebuilt and swapped in; any other non-empty directory is refused. The import is built in a hidden
sibling directory and renamed into place, so an interrupted run leaves no partial OUTDIR.

Modules: reader (GGUF parsing), families (architecture -> config), types (ggml types), blocks and
bitpack (quant repacking), weights (names through the gguf package's tables, shapes, q/k order),
rope_factors (Llama 3.1 RoPE), convert (streaming shards), config, tokenizer and spm_tokenizer,
marker (output-dir policy), ollama (Ollama's store), importer (orchestration).
"""

from .errors import GGUFImportError
from .importer import ImportSummary, import_gguf

__all__ = ["GGUFImportError", "ImportSummary", "import_gguf"]
