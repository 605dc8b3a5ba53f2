namespace LatentDiffusion.Adapters;

/// <summary>How the tensors of a LoRA file are named.</summary>
public enum LoraFormat
{
    /// <summary>
    /// kohya sd-scripts / AUTOMATIC1111: <c>lora_unet_*</c>, <c>lora_te_*</c> (<c>lora_te1_*</c>, <c>lora_te2_*</c> for
    /// SDXL), each module as <c>.lora_down.weight</c>, <c>.lora_up.weight</c> and an optional <c>.alpha</c>.
    /// </summary>
    Kohya,

    /// <summary>
    /// diffusers / PEFT (<c>pytorch_lora_weights.safetensors</c>): <c>unet.&lt;module path&gt;.lora_A.weight</c> and
    /// <c>.lora_B.weight</c>, <c>text_encoder.text_model.*</c>; without an alpha, alpha is the rank.
    /// </summary>
    Peft,
}
