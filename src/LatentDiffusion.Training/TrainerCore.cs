using System.Runtime.InteropServices;
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
    /// loss or gradients are not finite is refused before anything is updated (see <see cref="NonFiniteStep"/>).
    /// </summary>
    /// <param name="loss">The step's loss, with its graph.</param>
    /// <param name="recompute">Computes the same loss again (same batch, draws and weights), for the diagnosis of a refused
    /// step: whether the fault repeats and, under autograd's anomaly detection, which backward function produced it.</param>
    /// <exception cref="InvalidOperationException">The loss or a gradient is NaN or infinite; the weights, the EMA, the
    /// optimizer state and the step count are unchanged.</exception>
    public double Apply(Tensor loss, Func<Tensor>? recompute = null)
    {
        double lr = LearningRateAt(StepCount);
        _optimizer.zero_grad();
        float lossValue = loss.item<float>();
        if (!float.IsFinite(lossValue)) throw NonFiniteStep(lossValue, null, recompute);
        loss.backward();
        if (!CheckAndClipGradients(clip: true)) throw NonFiniteStep(lossValue, NonFiniteGradientParts(), recompute);
        foreach (var group in _optimizer.ParamGroups) group.LearningRate = lr;
        _optimizer.step();
        Ema?.Update(ExponentialMovingAverage.DecayAt(_emaDecay, StepCount));
        StepCount++;
        return lr;
    }

    /// <summary>
    /// The total L2 norm of the gradients, computed once: a non-finite one returns false (checked before any clipping,
    /// which would spread one bad value to every gradient); when <paramref name="clip"/> and above <see cref="_maxGradNorm"/>,
    /// every gradient is scaled by max / (norm + 1e-6), as <c>torch.nn.utils.clip_grad_norm_</c> scales them.
    /// </summary>
    private bool CheckAndClipGradients(bool clip)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var grads = _params.Select(p => p.Param.grad).OfType<Tensor>().ToList();
        if (grads.Count == 0) return true;
        var total = stack(grads.Select(g => g.norm()).ToList()).norm();
        if (!float.IsFinite(total.item<float>())) return false;
        if (!clip || _maxGradNorm <= 0) return true;
        var coefficient = (_maxGradNorm / (total + 1e-6)).clamp_max(1.0);
        foreach (var g in grads) g.mul_(coefficient);
        return true;
    }

    /// <summary>
    /// Where the non-finite gradients are, per part (the name's first segment: unet, text_encoder, ...): a bad value in a
    /// backward pass spreads to the gradients of every parameter used before the operation that produced it in the forward
    /// pass, and to none used after it, so the text lists both sides of that boundary.
    /// </summary>
    private string NonFiniteGradientParts()
    {
        var parts = new List<(string Part, List<string> Bad, List<string> Good)>();
        using (no_grad())
            foreach (var (name, p) in _params)
            {
                using var g = p.grad;
                if (g is null) continue;
                string part = name.Split('.')[0];
                if (parts.Count == 0 || parts[^1].Part != part) parts.Add((part, [], []));
                using var finite = isfinite(g).all();
                (finite.item<bool>() ? parts[^1].Good : parts[^1].Bad).Add(name);
            }
        var described = parts.Where(p => p.Bad.Count > 0).Select(p =>
            $"{p.Part}: {p.Bad.Count} of {p.Bad.Count + p.Good.Count} (the last in its order: {string.Join(", ", p.Bad.TakeLast(2))}" +
            (p.Good.Count == 0 ? ")" : $"; the first still finite: {string.Join(", ", p.Good.Take(2))})")).ToList();
        return described.Count == 0 ? "the total gradient norm overflowed"
            : $"parameters have NaN or infinite gradients: {string.Join("; ", described)}. The operation that produced them runs after the parameters " +
              "with bad gradients are used and before the finite ones, in the forward pass";
    }

    /// <summary>
    /// The error for a refused step: what was not finite (the loss, or the gradients and where), and, when the step can be
    /// recomputed, whether the fault repeats with the same inputs and which backward function produced it.
    /// </summary>
    private InvalidOperationException NonFiniteStep(float lossValue, string? badGradients, Func<Tensor>? recompute)
    {
        string what = badGradients is null
            ? $"the loss is {lossValue}"
            : $"the loss {lossValue} is finite but {badGradients}";
        string diagnosis = recompute is null ? "" : " " + Diagnose(badGradients is null, recompute);
        string advice = badGradients is null ? " Check the batch for NaN or infinite values." : "";
        return new InvalidOperationException(
            $"Step {StepCount + 1}: {what}. The step was not applied (weights, EMA and optimizer state unchanged).{diagnosis}{advice}");
    }

    /// <summary>
    /// Recomputes the refused step with the same batch, draws and weights: a fault that does not repeat is not in the data
    /// or the weights but in the computation (a kernel or memory fault); one that repeats in the backward pass is run again
    /// under autograd's anomaly detection, which names the first backward function that returned NaN.
    /// </summary>
    private string Diagnose(bool lossWasBad, Func<Tensor> recompute)
    {
        const string NotRepeated = "so the fault did not repeat: neither the batch nor the weights caused it, but a nondeterministic fault in the " +
                                   "computation (a libtorch kernel or memory fault on this machine); please report it with this message";
        try
        {
            using var scope = NewDisposeScope();
            if (lossWasBad)
            {
                using var noGrad = no_grad();
                float again = recompute().item<float>();
                return float.IsFinite(again)
                    ? $"Recomputed with the same batch, draws and weights, the loss is {again}, {NotRepeated}."
                    : $"Recomputed with the same batch, draws and weights, the loss is {again} again.";
            }
            // The refused step's gradients go; the recomputation's take their place (and go too, below).
            _optimizer.zero_grad();
            using (torch.autograd.detect_anomaly())
            {
                try { recompute().backward(); }
                catch (Exception e) when (e is ExternalException or InvalidOperationException)
                {
                    return $"Recomputed with the same batch, draws and weights under autograd's anomaly detection: {FirstLine(e.Message)}";
                }
            }
            return CheckAndClipGradients(clip: false)
                ? $"Recomputed with the same batch, draws and weights, the gradients are finite, {NotRepeated}."
                : "Recomputed with the same batch, draws and weights, the gradients are not finite again; no backward function returned NaN, so they are infinite.";
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return $"Recomputing the step to diagnose it failed: {e.GetType().Name}: {FirstLine(e.Message)}";
        }
        finally
        {
            _optimizer.zero_grad();
        }
    }

    private static string FirstLine(string message)
    {
        string line = message.Split('\n', 2)[0].Trim();
        return line.Length <= 300 ? line : line[..300] + "...";
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
