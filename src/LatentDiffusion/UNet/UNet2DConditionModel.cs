using LatentDiffusion.Abstractions;
using LatentDiffusion.Layers;
using LatentDiffusion.Formats;
using LatentDiffusion.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.UNet;

/// <summary>
/// The text-conditioned denoising UNet of Stable Diffusion 1.x/2.x and SDXL (diffusers' <c>UNet2DConditionModel</c>),
/// built from its <c>config.json</c>, with parameters named exactly as the diffusers state dict. SDXL's UNet is this one
/// with <c>addition_embed_type: "text_time"</c> (<c>add_time_proj</c> and <c>add_embedding</c>, fed by
/// <see cref="AddedConditions"/>), per-block transformer depths and head counts, and linear projections.
/// </summary>
public sealed class UNet2DConditionModel : nn.Module<Tensor, Tensor, Tensor, Tensor>, IUNet
{
    /// <summary>
    /// Does nothing: children are registered explicitly under the reference's names. TorchSharp's default would also
    /// register every module or tensor field under its C# field name (when this module is registered in a parent).
    /// </summary>
    protected override void RegisterComponents() { }

    private readonly nn.Module<Tensor, Tensor> _convIn;
    private readonly Timesteps _timeProj;
    private readonly TimestepEmbedding _timeEmbedding;
    private readonly Func<Tensor, Tensor>? _timeEmbedAct;
    private readonly Timesteps? _addTimeProj;
    private readonly TimestepEmbedding? _addEmbedding;
    private readonly UNetDownBlock[] _downBlocks;
    private readonly UNetMidBlock2DCrossAttn? _midBlock;
    private readonly UNetUpBlock[] _upBlocks;
    private readonly GroupNorm _convNormOut;
    private readonly Func<Tensor, Tensor> _convAct;
    private readonly nn.Module<Tensor, Tensor> _convOut;
    private readonly int _upsamplerCount;

    /// <summary>The architecture.</summary>
    public UNet2DConditionConfig Config { get; }

    /// <inheritdoc/>
    public int InChannels => Config.InChannels;

    /// <inheritdoc/>
    public int OutChannels => Config.OutChannels;

    /// <inheritdoc/>
    public int SampleSize => Config.SampleSize;

    /// <inheritdoc/>
    public int CrossAttentionDim => Config.CrossAttentionDim[0];

    /// <inheritdoc/>
    public int? AddedConditionsWidth => Config.AdditionEmbedType == "text_time" ? Config.ProjectionClassEmbeddingsInputDim : null;

    /// <inheritdoc/>
    public int? AddedTimeIdWidth => Config.AdditionEmbedType == "text_time" ? Config.AdditionTimeEmbedDim : null;

    /// <inheritdoc/>
    public Device Device { get; }

    /// <inheritdoc/>
    public ScalarType DType { get; }

    /// <summary>Every attention module of the model (self- and cross-attention), in execution order of the encoder, middle, decoder.</summary>
    public IEnumerable<Attention> AttentionModules => modules().OfType<Attention>();

    /// <summary>
    /// Sets <see cref="Attention.UpcastAttention"/> on every attention module. The config's <c>upcast_attention</c> sets it
    /// initially; the reference's own scaled-dot-product path ignores that setting, so a half-precision model may run
    /// faster with it off where the attention kernel already accumulates in float32.
    /// </summary>
    public void SetUpcastAttention(bool upcast)
    {
        foreach (var attention in AttentionModules) attention.UpcastAttention = upcast;
    }

    /// <summary>
    /// Builds the model with freshly initialised weights, allocated directly on <paramref name="device"/> in
    /// <paramref name="dtype"/>; use <see cref="Load(string, Device, ScalarType, string?)"/> for a trained one.
    /// </summary>
    /// <exception cref="InvalidDataException">The configuration is inconsistent.</exception>
    /// <exception cref="NotSupportedException">The configuration names a block type or activation this library does not implement.</exception>
    public UNet2DConditionModel(UNet2DConditionConfig config, Device device, ScalarType dtype) : base(nameof(UNet2DConditionModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        TorchRuntime.EnsureInitialized();
        config.Validate();
        Config = config;
        Device = device;
        DType = dtype;
        var channels = config.BlockOutChannels;
        int n = config.BlockCount;
        int tembDim = config.TimeEmbedDim;

        _convIn = ModuleBuilder.Conv2d(config.InChannels, channels[0], config.ConvInKernel, stride: 1, padding: (config.ConvInKernel - 1) / 2, device: device, dtype: dtype);
        register_module("conv_in", _convIn);
        _timeProj = new Timesteps(channels[0], config.FlipSinToCos, config.FreqShift, device);
        register_module("time_proj", _timeProj);
        _timeEmbedding = new TimestepEmbedding(channels[0], tembDim, config.ActFn, config.TimestepPostAct, config.TimeCondProjDim, device, dtype);
        register_module("time_embedding", _timeEmbedding);
        _timeEmbedAct = config.TimeEmbeddingActFn is null ? null : Activation.InPlace(config.TimeEmbeddingActFn);
        if (config.AdditionEmbedType == "text_time")
        {
            // SDXL: each time id gets sinusoidal features like the timestep; with the pooled text they go through an MLP
            // (always SiLU, whatever act_fn says) whose output is added to the time embedding.
            _addTimeProj = new Timesteps(config.AdditionTimeEmbedDim!.Value, config.FlipSinToCos, config.FreqShift, device);
            register_module("add_time_proj", _addTimeProj);
            _addEmbedding = new TimestepEmbedding(config.ProjectionClassEmbeddingsInputDim!.Value, tembDim, "silu", null, null, device, dtype);
            register_module("add_embedding", _addEmbedding);
        }

        _downBlocks = new UNetDownBlock[n];
        int outputChannel = channels[0];
        for (int i = 0; i < n; i++)
        {
            int inputChannel = outputChannel;
            outputChannel = channels[i];
            bool addDownsample = i < n - 1;
            _downBlocks[i] = config.DownBlockTypes[i] switch
            {
                "CrossAttnDownBlock2D" => new CrossAttnDownBlock2D(inputChannel, outputChannel, tembDim, config.LayersPerBlock[i], addDownsample, i, config, device, dtype),
                _ => new DownBlock2D(inputChannel, outputChannel, tembDim, config.LayersPerBlock[i], addDownsample, config, device, dtype),
            };
        }
        register_module("down_blocks", nn.ModuleList<nn.Module>(_downBlocks));

        if (config.MidBlockType is not null)
        {
            _midBlock = new UNetMidBlock2DCrossAttn(channels[n - 1], tembDim, config, device, dtype);
            register_module("mid_block", _midBlock);
        }

        // The decoder mirrors the encoder: per-block settings are read in reverse.
        _upBlocks = new UNetUpBlock[n];
        outputChannel = channels[n - 1];
        for (int i = 0; i < n; i++)
        {
            int mirrored = n - 1 - i;
            int prevOutputChannel = outputChannel;
            outputChannel = channels[mirrored];
            int inputChannel = channels[Math.Max(mirrored - 1, 0)];
            bool addUpsample = i < n - 1;
            if (addUpsample) _upsamplerCount++;
            int numLayers = config.LayersPerBlock[mirrored] + 1;
            _upBlocks[i] = config.UpBlockTypes[i] switch
            {
                "CrossAttnUpBlock2D" => new CrossAttnUpBlock2D(inputChannel, outputChannel, prevOutputChannel, tembDim, numLayers, addUpsample,
                    config.AttentionHeads[mirrored], config.TransformerLayersPerBlock[mirrored], config.CrossAttentionDim[mirrored], config.OnlyCrossAttention[mirrored],
                    config, device, dtype),
                _ => new UpBlock2D(inputChannel, outputChannel, prevOutputChannel, tembDim, numLayers, addUpsample, config, device, dtype),
            };
        }
        register_module("up_blocks", nn.ModuleList<nn.Module>(_upBlocks));

        _convNormOut = GroupNormalization.Create(config.NormNumGroups, channels[0], config.NormEps, device, dtype);
        register_module("conv_norm_out", _convNormOut);
        _convAct = Activation.InPlace(config.ActFn);
        _convOut = ModuleBuilder.Conv2d(channels[0], config.OutChannels, config.ConvOutKernel, stride: 1, padding: (config.ConvOutKernel - 1) / 2, device: device, dtype: dtype);
        register_module("conv_out", _convOut);

        // Inference only: no autograd bookkeeping, and the in-place activations stay legal. The weights belong to the
        // model, not to a dispose scope the caller may have open while building it.
        foreach (var p in parameters())
        {
            p.requires_grad = false;
            p.DetachFromDisposeScope();
        }
        foreach (var b in buffers()) b.DetachFromDisposeScope();
        eval();
    }

    /// <summary>
    /// Loads a diffusers <c>unet</c> folder: <c>config.json</c> and the weights (<paramref name="weightsFile"/>, default
    /// <c>diffusion_pytorch_model.safetensors</c>, or its <c>.fp16</c> variant when only that exists), converted to
    /// <paramref name="dtype"/> on <paramref name="device"/> as they are read.
    /// </summary>
    /// <param name="unetDir">The folder.</param>
    /// <param name="device">Where the model runs.</param>
    /// <param name="dtype">The dtype it runs in (float16 on GPUs, float32 on CPU).</param>
    /// <param name="weightsFile">A weights file name inside <paramref name="unetDir"/>, or a path.</param>
    /// <exception cref="FileNotFoundException">The config or weights file does not exist.</exception>
    /// <exception cref="NotSupportedException">The config selects something this library does not implement.</exception>
    /// <exception cref="InvalidDataException">The config is malformed, or the weights do not fit it (the message names the tensor).</exception>
    public static UNet2DConditionModel Load(string unetDir, Device device, ScalarType dtype, string? weightsFile = null)
    {
        TorchRuntime.EnsureInitialized();
        var config = UNet2DConditionConfig.Load(Path.Combine(unetDir, "config.json"));
        string path = weightsFile is not null ? Path.Combine(unetDir, weightsFile) : Path.Combine(unetDir, "diffusion_pytorch_model.safetensors");
        if (weightsFile is null && !File.Exists(path) && File.Exists(Path.Combine(unetDir, "diffusion_pytorch_model.fp16.safetensors")))
            path = Path.Combine(unetDir, "diffusion_pytorch_model.fp16.safetensors");
        if (!File.Exists(path))
            throw new FileNotFoundException($"UNet weights not found: '{path}' (only .safetensors weights are supported).", path);
        using var file = SafetensorsFile.Open(path);
        var weights = file.Entries.Keys.ToDictionary(k => k, k => TensorRef.Direct(file, k), StringComparer.Ordinal);
        return Load(config, weights, device, dtype, $"unet from '{unetDir}'");
    }

    /// <summary>Builds the model for <paramref name="config"/> and loads <paramref name="weights"/> (named as the diffusers state dict) into it.</summary>
    /// <param name="config">The architecture.</param>
    /// <param name="weights">Every weight, by its diffusers name (for example from a single-file checkpoint, renamed).</param>
    /// <param name="device">Where the model runs.</param>
    /// <param name="dtype">The dtype it runs in.</param>
    /// <param name="component">What is loaded, for messages.</param>
    /// <exception cref="InvalidDataException">A weight is missing, unexpected or of the wrong shape (the message names it).</exception>
    public static UNet2DConditionModel Load(UNet2DConditionConfig config, IReadOnlyDictionary<string, TensorRef> weights, Device device, ScalarType dtype, string? component = null)
    {
        ArgumentNullException.ThrowIfNull(weights);
        // Names and shapes are checked against the config before the model is allocated.
        return WeightLoader.BuildChecked(d => new UNet2DConditionModel(config, d, dtype), device, weights, component ?? "unet");
    }

    /// <summary>As <see cref="Load(UNet2DConditionConfig, IReadOnlyDictionary{string, TensorRef}, Device, ScalarType, string?)"/> for weights that <see cref="CheckWeights"/> has accepted.</summary>
    internal static UNet2DConditionModel LoadPrechecked(UNet2DConditionConfig config, IReadOnlyDictionary<string, TensorRef> weights, Device device, ScalarType dtype, string component)
        => WeightLoader.BuildPrechecked(d => new UNet2DConditionModel(config, d, dtype), device, weights, component);

    /// <summary>Checks that <paramref name="weights"/> fit the model <paramref name="config"/> describes, building only its skeleton on the <c>meta</c> device.</summary>
    /// <exception cref="InvalidDataException">A weight is missing, unexpected, of the wrong shape or not floating-point.</exception>
    internal static void CheckWeights(UNet2DConditionConfig config, IReadOnlyDictionary<string, TensorRef> weights, string component)
    {
        using var skeleton = new UNet2DConditionModel(config, new Device(DeviceType.META), ScalarType.Float32);
        WeightLoader.Check(skeleton, weights, component);
    }

    /// <summary>Parses <paramref name="config"/> (a diffusers <c>unet/config.json</c>), then as <see cref="Load(UNet2DConditionConfig, IReadOnlyDictionary{string, TensorRef}, Device, ScalarType, string?)"/>.</summary>
    /// <exception cref="NotSupportedException">The config selects something this library does not implement.</exception>
    /// <exception cref="InvalidDataException">The config is malformed, or a weight does not fit it.</exception>
    public static UNet2DConditionModel Load(JsonConfig config, IReadOnlyDictionary<string, TensorRef> weights, Device device, ScalarType dtype, string? component = null)
        => Load(UNet2DConditionConfig.FromJson(config), weights, device, dtype, component ?? $"unet from '{config.Source}'");

    /// <inheritdoc/>
    public Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates) => Forward(sample, timestep, encoderHiddenStates, null);

    /// <summary>
    /// One forward pass without autograd; as <see cref="IUNet.Forward(Tensor, Tensor, Tensor)"/>, plus <paramref name="timestepCond"/>
    /// <c>[batch, time_cond_proj_dim]</c> for models with a <c>time_cond_proj_dim</c> (distilled models' guidance embedding).
    /// Inputs in another dtype or on another device are converted to the model's.
    /// </summary>
    public Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, Tensor? timestepCond)
        => Forward(sample, timestep, encoderHiddenStates, timestepCond, CancellationToken.None);

    /// <summary>
    /// As <see cref="Forward(Tensor, Tensor, Tensor, Tensor?)"/>, checking <paramref name="cancellationToken"/> before
    /// every block (encoder stages, middle block, decoder stages), so that a cancellation stops the pass within one
    /// block even at a large size.
    /// </summary>
    /// <exception cref="OperationCanceledException">The token was cancelled; the tensors the pass allocated are released.</exception>
    public Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, Tensor? timestepCond, CancellationToken cancellationToken)
        => Forward(sample, timestep, encoderHiddenStates, timestepCond, null, cancellationToken);

    /// <summary>
    /// As <see cref="Forward(Tensor, Tensor, Tensor, Tensor?, CancellationToken)"/>, taking the cross-attention keys and
    /// values of <paramref name="encoderHiddenStates"/> from <paramref name="crossAttentionCache"/> (projected and added
    /// on first use), so that a generation projects its text context once, not once per step. The cache is used only
    /// when the context is already in the model's dtype and on its device (a converted copy is a new tensor each call).
    /// </summary>
    /// <exception cref="OperationCanceledException">The token was cancelled; the tensors the pass allocated are released.</exception>
    public Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, Tensor? timestepCond, CrossAttentionCache? crossAttentionCache, CancellationToken cancellationToken)
    {
        using var noGrad = no_grad();
        return Run(sample, timestep, encoderHiddenStates, timestepCond, null, crossAttentionCache, cancellationToken);
    }

    /// <summary>
    /// As <see cref="Forward(Tensor, Tensor, Tensor, Tensor?, CrossAttentionCache?, CancellationToken)"/>, with SDXL's
    /// <paramref name="addedConditions"/> (required when the config's <c>addition_embed_type</c> is <c>"text_time"</c>,
    /// refused otherwise): the time ids' sinusoidal features and the pooled text embedding, through <c>add_embedding</c>,
    /// are added to the time embedding.
    /// </summary>
    /// <exception cref="ArgumentException">Added conditions are missing, unexpected, or of the wrong shape (the message says which).</exception>
    /// <exception cref="OperationCanceledException">The token was cancelled; the tensors the pass allocated are released.</exception>
    public Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, AddedConditions? addedConditions, Tensor? timestepCond,
        CrossAttentionCache? crossAttentionCache, CancellationToken cancellationToken)
    {
        using var noGrad = no_grad();
        return Run(sample, timestep, encoderHiddenStates, timestepCond, addedConditions, crossAttentionCache, cancellationToken);
    }

    /// <inheritdoc/>
    Tensor IUNet.Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, AddedConditions? addedConditions, CrossAttentionCache? crossAttentionCache, CancellationToken cancellationToken)
        => Forward(sample, timestep, encoderHiddenStates, addedConditions, null, crossAttentionCache, cancellationToken);

    /// <inheritdoc/>
    Tensor IUNet.Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, CancellationToken cancellationToken)
        => Forward(sample, timestep, encoderHiddenStates, (Tensor?)null, null, cancellationToken);

    /// <inheritdoc/>
    Tensor IUNet.Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, CrossAttentionCache? crossAttentionCache, CancellationToken cancellationToken)
        => Forward(sample, timestep, encoderHiddenStates, (Tensor?)null, crossAttentionCache, cancellationToken);

    /// <inheritdoc/>
    public override Tensor forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates) => Run(sample, timestep, encoderHiddenStates, null, null, null, CancellationToken.None);

    /// <summary>Told the name of each block (<c>down_blocks.0</c>, <c>mid_block</c>, <c>up_blocks.1</c>) as it finishes; for tests.</summary>
    internal Action<string>? BlockFinished { get; set; }

    private Tensor Run(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, Tensor? timestepCond, AddedConditions? added, CrossAttentionCache? cache, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        ArgumentNullException.ThrowIfNull(sample);
        ArgumentNullException.ThrowIfNull(timestep);
        ArgumentNullException.ThrowIfNull(encoderHiddenStates);
        if (sample.dim() != 4 || sample.shape[1] != InChannels)
            throw new ArgumentException($"sample must be [batch, {InChannels}, height, width], got [{string.Join(", ", sample.shape)}].", nameof(sample));
        long batch = sample.shape[0];
        if (encoderHiddenStates.dim() != 3 || encoderHiddenStates.shape[^1] != CrossAttentionDim)
            throw new ArgumentException($"encoderHiddenStates must be [batch, tokens, {CrossAttentionDim}], got [{string.Join(", ", encoderHiddenStates.shape)}].", nameof(encoderHiddenStates));
        if (timestep.dim() > 1 || (timestep.dim() == 1 && timestep.shape[0] != 1 && timestep.shape[0] != batch))
            throw new ArgumentException($"timestep must be a scalar or a [{batch}] tensor, got [{string.Join(", ", timestep.shape)}].", nameof(timestep));
        CheckAddedConditions(added, batch);

        using var scope = NewDisposeScope();
        if (sample.dtype != DType || !Devices.Same(sample.device, Device)) sample = sample.to(DType, Device);
        if (encoderHiddenStates.dtype != DType || !Devices.Same(encoderHiddenStates.device, Device))
        {
            encoderHiddenStates = encoderHiddenStates.to(DType, Device);
            // A converted context is a new tensor every call: caching its projections would only pile them up.
            cache = null;
        }
        var crossAttention = new CrossAttentionContext(encoderHiddenStates, cache);
        if (timestepCond is not null && (timestepCond.dtype != DType || !Devices.Same(timestepCond.device, Device))) timestepCond = timestepCond.to(DType, Device);

        // When a side is not a multiple of the total down-sampling factor, each up-sampler must reach the size of the
        // skip connection it meets instead of simply doubling.
        long upFactor = 1L << _upsamplerCount;
        bool forwardUpsampleSize = sample.shape[2] % upFactor != 0 || sample.shape[3] % upFactor != 0;

        if (Config.CenterInputSample) sample = sample * 2.0 - 1.0;

        // The sinusoidal features are computed in float32 whatever the model's dtype, then cast, as the reference does.
        var timesteps = timestep.dim() == 0 ? timestep.reshape(1) : timestep;
        if (!Devices.Same(timesteps.device, Device)) timesteps = timesteps.to(Device);
        timesteps = timesteps.expand(batch);
        var emb = _timeEmbedding.forward(_timeProj.forward(timesteps).to(DType), timestepCond);
        if (added is not null) emb = emb + AddedEmbedding(added);
        if (_timeEmbedAct is not null) emb = _timeEmbedAct(emb);

        var hidden = _convIn.call(sample);
        var skips = new List<Tensor> { hidden };
        for (int i = 0; i < _downBlocks.Length; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var (output, blockSkips) = _downBlocks[i].forward(hidden, emb, crossAttention);
            skips.AddRange(blockSkips);
            hidden = output;
            BlockFinished?.Invoke($"down_blocks.{i}");
        }

        if (_midBlock is not null)
        {
            cancellationToken.ThrowIfCancellationRequested();
            hidden = _midBlock.forward(hidden, emb, crossAttention);
            BlockFinished?.Invoke("mid_block");
        }

        long[]? upsampleSize = null;
        for (int i = 0; i < _upBlocks.Length; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var block = _upBlocks[i];
            int take = block.SkipCount;
            var consumed = skips.GetRange(skips.Count - take, take);
            skips.RemoveRange(skips.Count - take, take);
            if (i < _upBlocks.Length - 1 && forwardUpsampleSize) upsampleSize = [skips[^1].shape[2], skips[^1].shape[3]];
            hidden = block.forward(hidden, consumed, emb, crossAttention, upsampleSize);
            // Release the encoder activations as soon as the decoder has used them, to lower the peak memory.
            foreach (var s in consumed) s.Dispose();
            BlockFinished?.Invoke($"up_blocks.{i}");
        }
        cancellationToken.ThrowIfCancellationRequested();

        var output2 = _convOut.call(_convAct(_convNormOut.forward(hidden)));
        return output2.MoveToOuterDisposeScope();
    }

    /// <summary>SDXL's <c>text_time</c> embedding: <c>add_embedding(cat(text_embeds, add_time_proj(time_ids)))</c>.</summary>
    private Tensor AddedEmbedding(AddedConditions added)
    {
        var textEmbeds = added.TextEmbeds;
        if (!Devices.Same(textEmbeds.device, Device)) textEmbeds = textEmbeds.to(Device);
        var timeIds = added.TimeIds.to(Device).flatten();
        var timeEmbeds = _addTimeProj!.forward(timeIds).reshape(textEmbeds.shape[0], -1);
        var addEmbeds = cat([textEmbeds.to(timeEmbeds.dtype), timeEmbeds], -1).to(DType);
        return _addEmbedding!.forward(addEmbeds, null);
    }

    private void CheckAddedConditions(AddedConditions? added, long batch)
    {
        if (AddedConditionsWidth is not int width)
        {
            if (added is not null)
                throw new ArgumentException("This UNet has no added conditioning ('addition_embed_type' is null), so it takes no text embeds and time ids.", nameof(added));
            return;
        }
        if (added is null)
            throw new ArgumentException("This UNet has 'addition_embed_type' \"text_time\" (SDXL): it needs added conditions, the pooled text embeds and the time ids.", nameof(added));
        ArgumentNullException.ThrowIfNull(added.TextEmbeds, nameof(added.TextEmbeds));
        ArgumentNullException.ThrowIfNull(added.TimeIds, nameof(added.TimeIds));
        var (text, ids) = (added.TextEmbeds, added.TimeIds);
        if (text.dim() != 2 || text.shape[0] != batch)
            throw new ArgumentException($"Added conditions: text embeds must be [{batch}, width], got [{string.Join(", ", text.shape)}].", nameof(added));
        if (ids.dim() != 2 || ids.shape[0] != batch)
            throw new ArgumentException($"Added conditions: time ids must be [{batch}, ids], got [{string.Join(", ", ids.shape)}].", nameof(added));
        long given = text.shape[1] + ids.shape[1] * AddedTimeIdWidth!.Value;
        if (given != width)
            throw new ArgumentException($"Added conditions: {text.shape[1]} text embed values + {ids.shape[1]} time ids x {AddedTimeIdWidth} = {given}, but the UNet's " +
                $"'projection_class_embeddings_input_dim' is {width}. (A refiner takes 5 time ids with an aesthetic score, a base model 6: check requires_aesthetics_score.)", nameof(added));
    }
}
