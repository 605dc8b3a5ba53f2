using System.Text.Json;
using System.Text.Json.Nodes;
using LatentDiffusion.Formats;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace LatentDiffusion.Training;

/// <summary>
/// What every trainer shares: the trained parameters, AdamW with a linear learning-rate warm-up, gradient clipping, an
/// optional EMA, the step counter, and resumable checkpoints (raw weights, EMA, optimizer state, step).
/// </summary>
internal sealed class TrainerCore : IDisposable
{
    private const string StateFile = "trainer_state.json";
    private const string WeightsFile = "weights.safetensors";
    private const string EmaFile = "ema.safetensors";
    private const string OptimizerFile = "optimizer.bin";

    private readonly (string Name, Parameter Param)[] _params;
    private readonly AdamW _optimizer;
    private readonly string _kind;
    private readonly double _learningRate;
    private readonly int _warmupSteps;
    private readonly double _maxGradNorm;
    private readonly double _emaDecay;

    public TrainerCore(string kind, IEnumerable<(string Name, Parameter Param)> parameters, double learningRate, int warmupSteps, double weightDecay,
        double maxGradNorm, double? emaDecay)
    {
        if (!(learningRate > 0)) throw new ArgumentOutOfRangeException(nameof(learningRate), learningRate, "The learning rate must be positive.");
        ArgumentOutOfRangeException.ThrowIfNegative(warmupSteps);
        if (weightDecay < 0) throw new ArgumentOutOfRangeException(nameof(weightDecay), weightDecay, "The weight decay cannot be negative.");
        if (emaDecay is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(emaDecay), emaDecay, "The EMA decay must be in [0, 1).");
        _kind = kind;
        _params = parameters.ToArray();
        if (_params.Length == 0) throw new ArgumentException("There is nothing to train: no parameters.", nameof(parameters));
        foreach (var (_, p) in _params) p.requires_grad = true;
        _learningRate = learningRate;
        _warmupSteps = warmupSteps;
        _maxGradNorm = maxGradNorm;
        _emaDecay = emaDecay ?? 0;
        _optimizer = optim.AdamW(_params.Select(p => p.Param), lr: learningRate, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: weightDecay);
        Ema = emaDecay is null ? null : new ExponentialMovingAverage(_params);
    }

    public int StepCount { get; private set; }

    public ExponentialMovingAverage? Ema { get; }

    public IReadOnlyList<(string Name, Parameter Param)> Parameters => _params;

    /// <summary>The learning rate of 0-based step <paramref name="step"/>: linear warm-up over the first steps, then constant.</summary>
    public double LearningRateAt(int step) => _warmupSteps == 0 ? _learningRate : _learningRate * Math.Min(1.0, (step + 1.0) / _warmupSteps);

    /// <summary>
    /// Backward of <paramref name="loss"/>, clipping, the AdamW update at the warmed-up rate, the EMA update. A step whose
    /// gradients are not finite is refused before anything is updated (see <see cref="NonFiniteGradients"/>).
    /// </summary>
    /// <exception cref="InvalidOperationException">The loss or a gradient is NaN or infinite; the weights, the EMA, the
    /// optimizer state and the step count are unchanged.</exception>
    public double Apply(Tensor loss)
    {
        double lr = LearningRateAt(StepCount);
        _optimizer.zero_grad();
        loss.backward();
        ClipGradients(loss);
        foreach (var group in _optimizer.ParamGroups) group.LearningRate = lr;
        _optimizer.step();
        Ema?.Update(ExponentialMovingAverage.DecayAt(_emaDecay, StepCount));
        StepCount++;
        return lr;
    }

    /// <summary>
    /// The total L2 norm of the gradients, computed once: a non-finite one refuses the step (checked before any clipping,
    /// which would spread one bad value to every gradient); above <see cref="_maxGradNorm"/> every gradient is scaled by
    /// max / (norm + 1e-6), as <c>torch.nn.utils.clip_grad_norm_</c> scales them.
    /// </summary>
    private void ClipGradients(Tensor loss)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var grads = _params.Select(p => p.Param.grad).OfType<Tensor>().ToList();
        if (grads.Count == 0) return;
        var total = stack(grads.Select(g => g.norm()).ToList()).norm();
        if (!float.IsFinite(total.item<float>())) throw NonFiniteGradients(loss);
        if (_maxGradNorm <= 0) return;
        var coefficient = (_maxGradNorm / (total + 1e-6)).clamp_max(1.0);
        foreach (var g in grads) g.mul_(coefficient);
    }

    /// <summary>
    /// The error for a step whose gradients are not finite. A bad value in a backward pass spreads to the gradients of
    /// every parameter used before the operation that produced it in the forward pass, and to none used after it, so the
    /// message lists both sides of that boundary.
    /// </summary>
    private InvalidOperationException NonFiniteGradients(Tensor loss)
    {
        float lossValue = loss.item<float>();
        if (!float.IsFinite(lossValue))
            return new InvalidOperationException($"Step {StepCount + 1}: the loss is {lossValue}; the step was not applied (weights, EMA and optimizer state unchanged). Check the batch for NaN or infinite values.");
        // Per part (the name's first segment: unet, text_encoder, ...), in each part's own order.
        var parts = new List<(string Part, List<string> Bad, List<string> Good)>();
        using (no_grad())
            foreach (var (name, p) in _params)
            {
                if (p.grad is not { } g) continue;
                string part = name.Split('.')[0];
                if (parts.Count == 0 || parts[^1].Part != part) parts.Add((part, [], []));
                using var finite = isfinite(g).all();
                (finite.item<bool>() ? parts[^1].Good : parts[^1].Bad).Add(name);
            }
        var described = parts.Where(p => p.Bad.Count > 0).Select(p =>
            $"{p.Part}: {p.Bad.Count} of {p.Bad.Count + p.Good.Count} (the last in its order: {string.Join(", ", p.Bad.TakeLast(2))}" +
            (p.Good.Count == 0 ? ")" : $"; the first still finite: {string.Join(", ", p.Good.Take(2))})")).ToList();
        string which = described.Count == 0 ? "the total gradient norm overflowed"
            : $"parameters have NaN or infinite gradients: {string.Join("; ", described)}. The operation that produced them runs after the parameters " +
              "with bad gradients are used and before the finite ones, in the forward pass";
        return new InvalidOperationException($"Step {StepCount + 1}: the loss {lossValue} is finite but {which}. The step was not applied (weights, EMA and optimizer state unchanged).");
    }

    /// <summary>A seed for the random draws of a step, so that a resumed run draws exactly what a straight run would.</summary>
    public static ulong StepSeed(long seed, int step)
    {
        // SplitMix64 of (seed, step): nearby seeds and steps give unrelated streams.
        ulong z = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)step + 1);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return z ^ (z >> 31);
    }

    public void SaveCheckpoint(string dir, JsonObject extra)
    {
        ArgumentException.ThrowIfNullOrEmpty(dir);
        string target = Path.GetFullPath(dir).TrimEnd(Path.DirectorySeparatorChar);
        string temp = $"{target}.tmp-{Guid.NewGuid():N}";
        Directory.CreateDirectory(temp);
        try
        {
            Save(Path.Combine(temp, WeightsFile), _params.Select(p => (p.Name, (Tensor)p.Param)));
            if (Ema is not null) Save(Path.Combine(temp, EmaFile), Ema.Shadows.Select(kv => (kv.Key, kv.Value)));
            _optimizer.save_state_dict(Path.Combine(temp, OptimizerFile));
            var state = new JsonObject { ["kind"] = _kind, ["step"] = StepCount };
            foreach (var (k, v) in extra) state[k] = v?.DeepClone();
            ConfigJson.Write(Path.Combine(temp, StateFile), state);
            if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
            Directory.Move(temp, target);
        }
        catch
        {
            try { if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true); } catch (IOException) { }
            throw;
        }
    }

    /// <summary>Restores weights, EMA, optimizer state and step; returns the saved state object for the caller's own keys.</summary>
    public JsonObject LoadCheckpoint(string dir)
    {
        string statePath = Path.Combine(dir, StateFile);
        if (!File.Exists(statePath)) throw new FileNotFoundException($"'{dir}' is not a training checkpoint: no {StateFile}.", statePath);
        var state = JsonNode.Parse(File.ReadAllText(statePath))?.AsObject() ?? throw new InvalidDataException($"'{statePath}' is not a JSON object.");
        string kind = state["kind"]?.GetValue<string>() ?? "";
        if (kind != _kind) throw new InvalidDataException($"'{dir}' is a {kind} checkpoint, not a {_kind} one.");
        using (var noGrad = no_grad())
        using (var file = SafetensorsFile.Open(Path.Combine(dir, WeightsFile)))
        {
            foreach (var (name, p) in _params)
            {
                if (!file.Entries.ContainsKey(name)) throw new InvalidDataException($"Checkpoint '{dir}' has no weight '{name}'; it was saved from another model or setting.");
                using var value = file.Load(name);
                if (!value.shape.SequenceEqual(p.shape))
                    throw new InvalidDataException($"Checkpoint '{dir}': weight '{name}' has shape [{string.Join(", ", value.shape)}], the model has [{string.Join(", ", p.shape)}].");
                p.copy_(value);
            }
        }
        if (Ema is not null)
        {
            using var file = SafetensorsFile.Open(Path.Combine(dir, EmaFile));
            var shadows = file.Entries.Keys.ToDictionary(k => k, k => file.Load(k), StringComparer.Ordinal);
            try { Ema.Load(shadows); }
            finally { foreach (var t in shadows.Values) t.Dispose(); }
        }
        _optimizer.load_state_dict(Path.Combine(dir, OptimizerFile));
        StepCount = state["step"]?.GetValue<int>() ?? throw new InvalidDataException($"'{statePath}' has no step.");
        return state;
    }

    private static void Save(string path, IEnumerable<(string Name, Tensor Tensor)> tensors)
    {
        var copies = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            using var noGrad = no_grad();
            foreach (var (name, t) in tensors)
            {
                var copy = t.detach().to(ScalarType.Float32, CPU, copy: true).contiguous();
                copy.DetachFromDisposeScope();
                copies[name] = copy;
            }
            SafetensorsWriter.Save(path, copies);
        }
        finally
        {
            foreach (var t in copies.Values) t.Dispose();
        }
    }

    public void Dispose()
    {
        _optimizer.Dispose();
        Ema?.Dispose();
    }
}
