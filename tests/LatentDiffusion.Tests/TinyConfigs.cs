using LatentDiffusion.Formats;
using LatentDiffusion.Schedulers;

namespace LatentDiffusion.Tests;

/// <summary>
/// Copies of small config files of the fixture models (without <c>_diffusers_version</c>), for tests that need a real
/// model's config but not its weights or outputs, so they run without the fixtures. <see cref="TinyConfigsTests"/> checks
/// that each copy still equals its file when the fixtures are there.
/// </summary>
public static class TinyConfigs
{
    /// <summary>tiny-sd15/scheduler/scheduler_config.json: PNDM (skip_prk_steps), epsilon, leading spacing.</summary>
    public const string Sd15SchedulerJson = """
        {
          "_class_name": "PNDMScheduler",
          "beta_end": 0.012,
          "beta_schedule": "scaled_linear",
          "beta_start": 0.00085,
          "num_train_timesteps": 1000,
          "prediction_type": "epsilon",
          "set_alpha_to_one": false,
          "skip_prk_steps": true,
          "steps_offset": 1,
          "timestep_spacing": "leading",
          "trained_betas": null
        }
        """;

    /// <summary>tiny-sd2v/scheduler/scheduler_config.json: DDIM, v_prediction.</summary>
    public const string Sd2vSchedulerJson = """
        {
          "_class_name": "DDIMScheduler",
          "beta_end": 0.012,
          "beta_schedule": "scaled_linear",
          "beta_start": 0.00085,
          "clip_sample": false,
          "clip_sample_range": 1.0,
          "dynamic_thresholding_ratio": 0.995,
          "num_train_timesteps": 1000,
          "prediction_type": "v_prediction",
          "rescale_betas_zero_snr": false,
          "sample_max_value": 1.0,
          "set_alpha_to_one": false,
          "steps_offset": 1,
          "thresholding": false,
          "timestep_spacing": "leading",
          "trained_betas": null
        }
        """;

    /// <summary>tiny-sd15/unet/config.json: the SD 1.5 topology at 32/32/64/64 channels.</summary>
    public const string Sd15UNetJson = """
        {
          "_class_name": "UNet2DConditionModel",
          "act_fn": "silu",
          "addition_embed_type": null,
          "addition_embed_type_num_heads": 64,
          "addition_time_embed_dim": null,
          "attention_head_dim": 8,
          "attention_type": "default",
          "block_out_channels": [
            32,
            32,
            64,
            64
          ],
          "center_input_sample": false,
          "class_embed_type": null,
          "class_embeddings_concat": false,
          "conv_in_kernel": 3,
          "conv_out_kernel": 3,
          "cross_attention_dim": 32,
          "cross_attention_norm": null,
          "down_block_types": [
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D"
          ],
          "downsample_padding": 1,
          "dropout": 0.0,
          "dual_cross_attention": false,
          "encoder_hid_dim": null,
          "encoder_hid_dim_type": null,
          "flip_sin_to_cos": true,
          "freq_shift": 0,
          "in_channels": 4,
          "layers_per_block": 2,
          "mid_block_only_cross_attention": null,
          "mid_block_scale_factor": 1,
          "mid_block_type": "UNetMidBlock2DCrossAttn",
          "norm_eps": 1e-05,
          "norm_num_groups": 32,
          "num_attention_heads": null,
          "num_class_embeds": null,
          "only_cross_attention": false,
          "out_channels": 4,
          "projection_class_embeddings_input_dim": null,
          "resnet_out_scale_factor": 1.0,
          "resnet_skip_time_act": false,
          "resnet_time_scale_shift": "default",
          "reverse_transformer_layers_per_block": null,
          "sample_size": 16,
          "time_cond_proj_dim": null,
          "time_embedding_act_fn": null,
          "time_embedding_dim": null,
          "time_embedding_type": "positional",
          "timestep_post_act": null,
          "transformer_layers_per_block": 1,
          "up_block_types": [
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D"
          ],
          "upcast_attention": false,
          "use_linear_projection": false
        }
        """;

    /// <summary>tiny-sd2v/unet/config.json: per-block heads, linear projections, upcast attention.</summary>
    public const string Sd2vUNetJson = """
        {
          "_class_name": "UNet2DConditionModel",
          "act_fn": "silu",
          "addition_embed_type": null,
          "addition_embed_type_num_heads": 64,
          "addition_time_embed_dim": null,
          "attention_head_dim": [
            2,
            4,
            8,
            8
          ],
          "attention_type": "default",
          "block_out_channels": [
            32,
            32,
            32,
            32
          ],
          "center_input_sample": false,
          "class_embed_type": null,
          "class_embeddings_concat": false,
          "conv_in_kernel": 3,
          "conv_out_kernel": 3,
          "cross_attention_dim": 32,
          "cross_attention_norm": null,
          "down_block_types": [
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D"
          ],
          "downsample_padding": 1,
          "dropout": 0.0,
          "dual_cross_attention": false,
          "encoder_hid_dim": null,
          "encoder_hid_dim_type": null,
          "flip_sin_to_cos": true,
          "freq_shift": 0,
          "in_channels": 4,
          "layers_per_block": 2,
          "mid_block_only_cross_attention": null,
          "mid_block_scale_factor": 1,
          "mid_block_type": "UNetMidBlock2DCrossAttn",
          "norm_eps": 1e-05,
          "norm_num_groups": 32,
          "num_attention_heads": null,
          "num_class_embeds": null,
          "only_cross_attention": false,
          "out_channels": 4,
          "projection_class_embeddings_input_dim": null,
          "resnet_out_scale_factor": 1.0,
          "resnet_skip_time_act": false,
          "resnet_time_scale_shift": "default",
          "reverse_transformer_layers_per_block": null,
          "sample_size": 16,
          "time_cond_proj_dim": null,
          "time_embedding_act_fn": null,
          "time_embedding_dim": null,
          "time_embedding_type": "positional",
          "timestep_post_act": null,
          "transformer_layers_per_block": 1,
          "up_block_types": [
            "UpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D",
            "CrossAttnUpBlock2D"
          ],
          "upcast_attention": true,
          "use_linear_projection": true
        }
        """;

    /// <summary>tiny-sd15/vae/config.json: 4 levels of 32/32/64/64 channels, 2 layers per block.</summary>
    public const string Sd15VaeJson = """
        {
          "_class_name": "AutoencoderKL",
          "act_fn": "silu",
          "block_out_channels": [
            32,
            32,
            64,
            64
          ],
          "down_block_types": [
            "DownEncoderBlock2D",
            "DownEncoderBlock2D",
            "DownEncoderBlock2D",
            "DownEncoderBlock2D"
          ],
          "force_upcast": true,
          "in_channels": 3,
          "latent_channels": 4,
          "latents_mean": null,
          "latents_std": null,
          "layers_per_block": 2,
          "mid_block_add_attention": true,
          "norm_num_groups": 32,
          "out_channels": 3,
          "sample_size": 128,
          "scaling_factor": 0.18215,
          "shift_factor": null,
          "up_block_types": [
            "UpDecoderBlock2D",
            "UpDecoderBlock2D",
            "UpDecoderBlock2D",
            "UpDecoderBlock2D"
          ],
          "use_post_quant_conv": true,
          "use_quant_conv": true
        }
        """;

    /// <summary>tiny-sd15/text_encoder/config.json: CLIPTextModel, hidden 32, 5 layers, quick_gelu, the real vocabulary size.</summary>
    public const string Sd15TextEncoderJson = """
        {
          "architectures": [
            "CLIPTextModel"
          ],
          "attention_dropout": 0.0,
          "bos_token_id": 0,
          "dtype": "float16",
          "eos_token_id": 2,
          "hidden_act": "quick_gelu",
          "hidden_size": 32,
          "initializer_factor": 1.0,
          "initializer_range": 0.02,
          "intermediate_size": 37,
          "layer_norm_eps": 1e-05,
          "max_position_embeddings": 77,
          "model_type": "clip_text_model",
          "num_attention_heads": 4,
          "num_hidden_layers": 5,
          "pad_token_id": 1,
          "projection_dim": 32,
          "transformers_version": "5.17.0",
          "vocab_size": 49408
        }
        """;

    /// <summary>The copies by their paths inside the fixtures folder.</summary>
    public static IReadOnlyDictionary<string, string> ByFixturePath { get; } = new Dictionary<string, string>
    {
        ["tiny-sd15/scheduler/scheduler_config.json"] = Sd15SchedulerJson,
        ["tiny-sd2v/scheduler/scheduler_config.json"] = Sd2vSchedulerJson,
        ["tiny-sd15/unet/config.json"] = Sd15UNetJson,
        ["tiny-sd2v/unet/config.json"] = Sd2vUNetJson,
        ["tiny-sd15/vae/config.json"] = Sd15VaeJson,
        ["tiny-sd15/text_encoder/config.json"] = Sd15TextEncoderJson,
    };

    /// <summary>tiny-sd15's scheduler config, parsed.</summary>
    public static JsonConfig Sd15Scheduler => SchedulerConfig.Parse(Sd15SchedulerJson, "tiny-sd15 scheduler config (copy)");

    /// <summary>tiny-sd2v's scheduler config, parsed.</summary>
    public static JsonConfig Sd2vScheduler => SchedulerConfig.Parse(Sd2vSchedulerJson, "tiny-sd2v scheduler config (copy)");
}
