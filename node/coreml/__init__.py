"""The Core ML backend: a worker's layer slice converted to an ML program for the Apple Neural Engine.

Modules, one job each:
  settings     what a conversion is fixed to (context, chunk, limits) and how the coordinator asks for it
  arch         the model numbers the program needs, from config.json (and what is refused)
  weights      a slice's tensors from safetensors, MLX affine-quantized kept as Core ML block-wise ints
  mil_layers   the MIL pieces of one decoder layer in the ANE's channels-first layout
  builder      one function (decode or prefill) of a slice as a MIL program
  package      conversion, multifunction save, chunking by size, the on-disk cache
  interpreter  executes a MIL function with numpy (Linux has no Core ML runtime)
  executors    run a converted slice: Core ML on macOS, or the interpreter
  stage        the StageModel-shaped object the StageRunner drives
  availability whether this machine has a Neural Engine Core ML can use
  measure      `python -m node.coreml.measure`: conversion time, package size, error against MLX

Nothing here imports coremltools at import time: the coordinator reads settings without it.
"""
