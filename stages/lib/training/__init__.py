"""Training, one concern per module; `stages/pretrain.py` (the DVC stage of all three phases) wires them.

  model       the Llama config from params, exact parameter count and FLOPs, loading a previous phase's weights
  schedule    data order (seed, epoch, stream position), Megatron's batch ramp-up, LR factor per step
  resume      what a run computes (its config fingerprint) and why a checkpoint may not be resumed
  checkpoint  training states in the work directory: list, save, prune, clean what a killed run left
  export      HF-format revisions (Lucie's Hub branch names) and their index, revisions.json
  steplog     the loss log (a DVC plot) and the speed log (wall clock), mirrored to MLflow
  validate    the validation loss
  trainer     the accelerator and the Trainer: a step function and a loop that calls the components above
  align_guard SFT/DPO (trl) callback: a non-finite loss or grad norm stops the align stage, no model written

Nothing here imports a stage; torch is imported inside functions so that planning and inspection stay light.
"""
