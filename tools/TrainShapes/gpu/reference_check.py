"""Loads a trained shapes pipeline folder in the reference (diffusers StableDiffusionPipeline, float32, CPU) and writes
what it makes, for comparison with this library on the same folder, seeds and settings:
  OUT/reference-cases.json    the cases: prompt, seed, steps, guidance, size, and the reference's token ids (unpadded)
  OUT/reference-<i>.npy       image i, float32 HWC in [0, 1] (output_type="np")
usage: python3 reference_check.py MODEL_DIR OUT
Compare with: dotnet run -c Release --project benchmarks/LatentDiffusion.Benchmarks -- reference-compare MODEL_DIR OUT
"""
import json, os, sys
import numpy as np
import torch
from diffusers import StableDiffusionPipeline

model, out = sys.argv[1], sys.argv[2]
CASES = [("a red circle on a blue background", 42), ("a small green triangle on the left, yellow background", 7),
         ("a large white square at the top", 3)]
pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
pipe.set_progress_bar_config(disable=True)
print("loaded:", type(pipe).__name__, type(pipe.scheduler).__name__, "unet params", sum(p.numel() for p in pipe.unet.parameters()))
json.dump([{"prompt": p, "seed": s, "steps": 25, "guidance": 7.5, "size": 64, "tokens": pipe.tokenizer(p).input_ids} for p, s in CASES],
          open(os.path.join(out, "reference-cases.json"), "w"))
for i, (prompt, seed) in enumerate(CASES):
    g = torch.Generator("cpu").manual_seed(seed)
    image = pipe(prompt, num_inference_steps=25, guidance_scale=7.5, height=64, width=64, generator=g, output_type="np").images[0]
    np.save(os.path.join(out, f"reference-{i}.npy"), image.astype(np.float32))
    print(f"reference-{i}: {prompt!r} seed {seed} mean {image.mean():.4f}")
