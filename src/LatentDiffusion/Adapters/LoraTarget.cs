using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Adapters;

/// <summary>
/// A model part a LoRA may update: its name in LoRA files (<c>unet</c>, <c>text_encoder</c>, <c>text_encoder_2</c>), its
/// module tree, the prefix the reference puts before the tree's paths (<c>text_model.</c> for a CLIP text model), and
/// whether its modules also answer to the original SGM names (a UNet: kohya names SDXL LoRAs that way).
/// </summary>
internal sealed record LoraTarget(string Component, nn.Module Root, string ReferencePrefix = "", bool SgmNames = false);
