"""GGUF import: turn a llama.cpp / Ollama GGUF into an mlx-lm model directory.

`import_gguf(src, dst)` writes config.json (HF Llama + mlx-lm quantization block), model*.safetensors
(HF tensor names; Q4_0/Q4_1/Q8_0 kept quantized as MLX affine triplets, q/k rows un-permuted),
tokenizer.json + tokenizer_config.json rebuilt from the GGUF vocabulary, and boltpipe_import.json
(source name, size, sha256, importer version) as a cache marker.

OUTDIR policy: created if missing; an empty directory is used; a previous import of the same file
(same size + sha256) by this importer version is left as is (summary.skipped); by an older version it
is rebuilt and swapped in; any other non-empty directory is refused. The import is built in a hidden
sibling directory and renamed into place, so an interrupted run leaves no partial OUTDIR.

Modules: reader (GGUF parsing),
types (ggml types), blocks (quant repacking), weights (names, q/k order), convert (streaming shards),
config, tokenizer, marker (output-dir policy), importer (orchestration).
"""

from .errors import GGUFImportError
from .importer import ImportSummary, import_gguf

__all__ = ["GGUFImportError", "ImportSummary", "import_gguf"]
