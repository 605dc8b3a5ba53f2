using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// PNDM (Liu et al. 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds"): the reference's
/// <c>PNDMScheduler</c>. Pseudo Runge-Kutta warm-up steps (unless <c>skip_prk_steps</c>), then linear multistep (PLMS).
/// The default scheduler of Stable Diffusion 1.x.
/// </summary>
public sealed class PndmScheduler : DiffusionScheduler
{
    internal static readonly (string Key, object? Default)[] Defaults =
    [
        .. BetaKeys, ("skip_prk_steps", false), ("set_alpha_to_one", false), ("prediction_type", "epsilon"),
        ("timestep_spacing", "leading"), ("steps_offset", 0),
    ];

    /// <summary>Builds PNDM from a scheduler config (missing keys take PNDM's defaults) and optional overrides.</summary>
    public PndmScheduler(JsonConfig? config = null, IReadOnlyDictionary<string, string>? overrides = null)
        : base("PNDMScheduler", Defaults, config, overrides)
    {
        FinalAlphaCumprod = ConfigReader.Bool("set_alpha_to_one") ? 1f : AlphasCumprod[0];
        SkipPrk = ConfigReader.Bool("skip_prk_steps");
    }

    internal override string[] SupportedPredictionTypes => ["epsilon", "v_prediction"];

    internal float FinalAlphaCumprod { get; }

    internal bool SkipPrk { get; }

    /// <inheritdoc/>
    protected override ISchedulerRun CreateRun(int inferenceSteps, torch.Generator? generator)
    {
        int T = NumTrainTimesteps;
        long[] baseSteps; // ascending
        switch (Schedule.TimestepSpacing)
        {
            case "linspace":
                baseSteps = NoiseSchedule.Linspace(0, T - 1, inferenceSteps).Select(v => (long)Math.Round(v)).ToArray();
                break;
            case "leading":
            {
                int ratio = T / inferenceSteps, offset = Schedule.StepsOffset;
                baseSteps = Enumerable.Range(0, inferenceSteps).Select(i => (long)(i * ratio + offset)).ToArray();
                break;
            }
            default:
                baseSteps = Enumerable.Reverse(NoiseSchedule.ArangeDown(T, 0, -(T / (double)inferenceSteps))).Select(v => (long)Math.Round(v) - 1).ToArray();
                break;
        }
        var prk = new List<long>();
        var plms = new List<long>();
        if (SkipPrk)
        {
            // The second timestep is repeated: the first PLMS step is a two-evaluation (Heun-like) step.
            plms.AddRange(baseSteps[..^1]);
            if (baseSteps.Length >= 2) plms.Add(baseSteps[^2]);
            plms.Add(baseSteps[^1]);
            plms.Reverse();
        }
        else
        {
            const int pndmOrder = 4;
            long half = T / inferenceSteps / 2;
            var last = baseSteps[^Math.Min(pndmOrder, baseSteps.Length)..];
            var pairs = new List<long>();
            for (int i = 0; i < pndmOrder && i < last.Length; i++) { pairs.Add(last[i]); pairs.Add(last[i] + half); }
            var doubled = new List<long>();
            foreach (var v in pairs.Take(pairs.Count - 1)) { doubled.Add(v); doubled.Add(v); }
            prk.AddRange(doubled.Skip(1).Take(doubled.Count - 2).Reverse());
            plms.AddRange(baseSteps.Length > 3 ? Enumerable.Reverse(baseSteps[..^3]) : []);
        }
        return new Run(this, inferenceSteps, [.. prk], [.. prk.Select(v => (double)v), .. plms.Select(v => (double)v)]);
    }

    private sealed class Run(PndmScheduler s, int steps, long[] prkTimesteps, double[] timesteps) : AlphaScheduleRun(s.AlphasCumprod, timesteps, null)
    {
        private readonly List<Tensor> _ets = [];
        private Tensor? _curModelOutput;
        private Tensor? _curSample;
        private int _counter;

        public override Tensor Step(Tensor modelOutput, double timestep, Tensor sample)
        {
            ThrowIfDisposed();
            using var scope = torch.NewDisposeScope();
            var result = _counter < prkTimesteps.Length && !s.SkipPrk
                ? StepPrk(modelOutput, (int)timestep, sample)
                : StepPlms(modelOutput, (int)timestep, sample);
            return result.MoveToOuterDisposeScope();
        }

        private Tensor StepPrk(Tensor modelOutput, int timestep, Tensor sample)
        {
            int stride = s.NumTrainTimesteps / steps;
            int diffToPrev = _counter % 2 == 1 ? 0 : stride / 2;
            int prevTimestep = timestep - diffToPrev;
            int t = (int)prkTimesteps[_counter / 4 * 4];
            // Runge-Kutta weights 1/6, 1/3, 1/3, 1/6 over the four evaluations of one step.
            switch (_counter % 4)
            {
                case 0:
                    Replace(ref _curModelOutput, _curModelOutput is null ? modelOutput * (1.0 / 6) : _curModelOutput + modelOutput * (1.0 / 6));
                    _ets.Add(Keep(modelOutput));
                    Replace(ref _curSample, sample);
                    break;
                case 1:
                case 2:
                    Replace(ref _curModelOutput, _curModelOutput! + modelOutput * (1.0 / 3));
                    break;
                default:
                    modelOutput = _curModelOutput! + modelOutput * (1.0 / 6);
                    Release(_curModelOutput);
                    _curModelOutput = null;
                    break;
            }
            var curSample = _curSample ?? sample;
            var prev = PrevSample(curSample, t, prevTimestep, modelOutput);
            _counter++;
            return prev;
        }

        private Tensor StepPlms(Tensor modelOutput, int timestep, Tensor sample)
        {
            int stride = s.NumTrainTimesteps / steps;
            int prevTimestep = timestep - stride;
            if (_counter != 1)
            {
                while (_ets.Count > 3) { Release(_ets[0]); _ets.RemoveAt(0); }
                _ets.Add(Keep(modelOutput));
            }
            else
            {
                prevTimestep = timestep;
                timestep += stride;
            }
            Tensor eps;
            if (_ets.Count == 1 && _counter == 0)
            {
                eps = modelOutput;
                Replace(ref _curSample, sample);
            }
            else if (_ets.Count == 1 && _counter == 1)
            {
                eps = (modelOutput + _ets[^1]) / 2;
                sample = _curSample!.alias();
                Release(_curSample);
                _curSample = null;
            }
            else if (_ets.Count == 2)
                eps = (3 * _ets[^1] - _ets[^2]) / 2;
            else if (_ets.Count == 3)
                eps = (23 * _ets[^1] - 16 * _ets[^2] + 5 * _ets[^3]) / 12;
            else
                eps = (1.0 / 24) * (55 * _ets[^1] - 59 * _ets[^2] + 37 * _ets[^3] - 9 * _ets[^4]);
            var prev = PrevSample(sample, timestep, prevTimestep, eps);
            _counter++;
            return prev;
        }

        private void Replace(ref Tensor? slot, Tensor value)
        {
            var kept = Keep(value);
            Release(slot);
            slot = kept;
        }

        /// <summary>The PNDM transfer x_t → x_{t−δ} given ε (formula (9) of the paper).</summary>
        private Tensor PrevSample(Tensor sample, int t, int prevT, Tensor eps)
        {
            float a = s.AlphasCumprod[t];
            float aPrev = prevT >= 0 ? s.AlphasCumprod[prevT] : s.FinalAlphaCumprod;
            float b = 1f - a, bPrev = 1f - aPrev;
            if (s.PredictionType == "v_prediction") eps = MathF.Sqrt(a) * eps + MathF.Sqrt(b) * sample;
            float sampleCoeff = MathF.Sqrt(aPrev / a);
            float denom = a * MathF.Sqrt(bPrev) + MathF.Sqrt(a * b * aPrev);
            return sampleCoeff * sample - (aPrev - a) * eps / denom;
        }
    }
}
