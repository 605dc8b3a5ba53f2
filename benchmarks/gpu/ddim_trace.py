"""Re-runs one reference txt2img fixture case (diffusers, float32, CPU) and records every step, to find where this
library and the reference part: the initial latents, each UNet output (both guidance halves), each predicted x0 and
each step's result, and the decoded image. Also says how far the re-run is from the stored fixture image.
usage: python3 ddim_trace.py MODEL_DIR CASE_JSON EXPECTED_F32 OUT_NPZ
"""
import json, sys
import numpy as np
import torch
from diffusers import StableDiffusionPipeline, DDIMScheduler

model, case_path, expected_path, out = sys.argv[1:5]
case = json.load(open(case_path))
pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
pipe.scheduler = DDIMScheduler.from_config(case["scheduler_config"])
pipe.set_progress_bar_config(disable=True)
rec = {}
unet_forward = pipe.unet.forward
def traced_unet(sample, t, *a, **k):
    n = len([x for x in rec if x.startswith("unet_in_")])
    rec[f"unet_in_{n}"] = sample.detach().clone().numpy()
    res = unet_forward(sample, t, *a, **k)
    rec[f"unet_out_{n}"] = (res[0] if isinstance(res, tuple) else res.sample).detach().clone().numpy()
    return res
pipe.unet.forward = traced_unet
scheduler_step = pipe.scheduler.step
def traced_step(model_output, timestep, sample, *a, **k):
    n = len([x for x in rec if x.startswith("step_x0_")])
    res = scheduler_step(model_output, timestep, sample, *a, **dict(k, return_dict=True))
    rec[f"step_eps_{n}"] = model_output.detach().clone().numpy()
    rec[f"step_x0_{n}"] = res.pred_original_sample.detach().clone().numpy()
    rec[f"step_prev_{n}"] = res.prev_sample.detach().clone().numpy()
    rec[f"step_t_{n}"] = np.array(int(timestep))
    return res if k.get("return_dict", True) else (res.prev_sample, res.pred_original_sample)
pipe.scheduler.step = traced_step
g = torch.Generator("cpu").manual_seed(case["seed"])
image = pipe(case["prompt"], negative_prompt=case["negative_prompt"], guidance_scale=case["guidance_scale"],
             num_inference_steps=case["steps"], height=case["height"], width=case["width"], generator=g, output_type="np").images
rec["image"] = image.astype(np.float32)
expected = np.fromfile(expected_path, dtype=np.float32).reshape(image.shape)
print(f"{case['key']}: re-run vs stored fixture max abs {np.abs(image - expected).max():.3e}, torch {torch.__version__}")
np.savez(out, **rec)
