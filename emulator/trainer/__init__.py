"""emulator/trainer: the torch trainer the gateway drives (docs/internals.md, "Gateway -> trainer").

Modules, one concept each:
  model_config   ModelSize + HF config.json for the stand-in (no torch)
  tiny_llama     the LLaMA-style model with Hugging Face parameter names
  lora           PEFT-layout LoRA adapters, merging, adapter_config.json
  adapter_fit    does a PEFT adapter fit a LoRA model (headers only, no torch)
  losses         wire TensorData/Datum decoding, cross_entropy / importance_sampling / ppo
  model_session  TrainerModel (forward_backward, optim_step, DCP save/load, sampler exports)
  errors         TrainerUserError
  arc_v2         ARC_V2 delta format (numpy only; its own owner)

Importing this package does not import torch: the gateway imports model_session lazily.
"""
