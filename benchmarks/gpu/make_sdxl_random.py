"""Writes a full-size SDXL base pipeline folder (diffusers layout) with random weights, for speed and memory.

The architecture, shapes and file layout of stabilityai/stable-diffusion-xl-base-1.0 (UNet 2.6 B parameters, CLIP ViT-L,
OpenCLIP ViT-bigG with projection, the 0.13025 VAE with force_upcast, the Euler scheduler file); the pictures are noise.
Needs torch, transformers and diffusers importable; builds the weights on the GPU when there is one.
usage: python3 make_sdxl_random.py OUTDIR --tokenizer DIR_WITH_vocab.json_AND_merges.txt [--dtype float16]
"""
import argparse, json, os, shutil
import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--tokenizer", required=True)
ap.add_argument("--dtype", default="float16")
a = ap.parse_args()
dtype = getattr(torch, a.dtype)
torch.manual_seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"


def save(model, name):
    model.to(dtype).save_pretrained(os.path.join(a.out, name), safe_serialization=True)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


os.makedirs(a.out, exist_ok=True)
with torch.device(device):
    save(UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816, norm_num_groups=32), "unet")
    save(AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512), latent_channels=4, layers_per_block=2, norm_num_groups=32,
        sample_size=1024, scaling_factor=0.13025, force_upcast=True), "vae")
    ids = dict(bos_token_id=0, eos_token_id=2, pad_token_id=1, vocab_size=49408, max_position_embeddings=77)
    save(CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                                      hidden_act="quick_gelu", projection_dim=768, **ids)), "text_encoder")
    save(CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
                                                    num_hidden_layers=32, hidden_act="gelu", projection_dim=1280, **ids)), "text_encoder_2")
EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                       steps_offset=1, timestep_spacing="leading").save_pretrained(os.path.join(a.out, "scheduler"))
for name, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
    folder = os.path.join(a.out, name)
    os.makedirs(folder, exist_ok=True)
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(a.tokenizer, f), folder)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad}
    json.dump(special, open(os.path.join(folder, "special_tokens_map.json"), "w"))
    json.dump({**special, "model_max_length": 77, "do_lower_case": True, "tokenizer_class": "CLIPTokenizer"},
              open(os.path.join(folder, "tokenizer_config.json"), "w"))
json.dump({
    "_class_name": "StableDiffusionXLPipeline", "force_zeros_for_empty_prompt": True,
    "feature_extractor": [None, None], "image_encoder": [None, None],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
}, open(os.path.join(a.out, "model_index.json"), "w"), indent=2)
print("wrote", a.out)
