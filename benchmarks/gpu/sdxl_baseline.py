"""Times the reference StableDiffusionXLPipeline on a model folder, on CUDA: seconds per image and peak GPU memory.

usage: python3 sdxl_baseline.py MODEL_DIR [--steps 30] [--size 1024] [--dtype float16] [--runs 2]
"""
import argparse, statistics, time
import torch
from diffusers import StableDiffusionXLPipeline

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--steps", type=int, default=30)
ap.add_argument("--size", type=int, default=1024)
ap.add_argument("--dtype", default="float16")
ap.add_argument("--runs", type=int, default=2)
a = ap.parse_args()
pipe = StableDiffusionXLPipeline.from_pretrained(a.model, torch_dtype=getattr(torch, a.dtype)).to("cuda")
pipe.set_progress_bar_config(disable=True)


def once():
    g = torch.Generator("cpu").manual_seed(0)
    torch.cuda.synchronize(); t = time.perf_counter()
    pipe("a photograph of an astronaut riding a horse", num_inference_steps=a.steps, height=a.size, width=a.size,
         guidance_scale=5.0, generator=g, output_type="np")
    torch.cuda.synchronize(); return time.perf_counter() - t


once()
torch.cuda.reset_peak_memory_stats()
ts = [once() for _ in range(a.runs)]
m = statistics.median(ts)
print(f"RESULT diffusers-sdxl {a.dtype} {a.size}px steps={a.steps}: {m:.3f} s/run (min {min(ts):.3f} max {max(ts):.3f}), "
      f"{a.steps / m:.2f} it/s, peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
