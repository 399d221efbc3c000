using System.Text.Json.Nodes;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Models.Diffusion;

/// <summary>scheduler/scheduler_config.json: the noise schedule and the spacing rules every scheduler shares.</summary>
public sealed record SchedulerConfig
{
    public string ClassName { get; init; } = "DDIMScheduler";
    public int NumTrainTimesteps { get; init; } = 1000;
    public double BetaStart { get; init; } = 0.0001;
    public double BetaEnd { get; init; } = 0.02;
    public string BetaSchedule { get; init; } = "linear";
    public int StepsOffset { get; init; }
    public bool SetAlphaToOne { get; init; } = true;

    /// <summary>The configured spacing, or null to use each scheduler's own default (leading for DDPM/DDIM/PNDM, linspace for Euler/LMS).</summary>
    public string? TimestepSpacing { get; init; }
    public string PredictionType { get; init; } = "epsilon";

    /// <summary>Clamp x̂0 to ±range. diffusers' DDIM/DDPM default to true; here a config without the key means false (latents).</summary>
    public bool ClipSample { get; init; }
    public double ClipSampleRange { get; init; } = 1.0;
    public JsonObject Json { get; init; } = new();

    /// <summary>Stable Diffusion 1.x's scheduler_config.json.</summary>
    public static SchedulerConfig StableDiffusion => new()
    {
        ClassName = "PNDMScheduler", BetaStart = 0.00085, BetaEnd = 0.012, BetaSchedule = "scaled_linear", StepsOffset = 1, SetAlphaToOne = false,
    };

    public static readonly string[] Spacings = ["leading", "trailing", "linspace"];

    public static SchedulerConfig Read(string path)
    {
        var r = ConfigReader.Open(path);
        r.Reject("beta_schedule", n => ConfigReader.IsNull(n) || n!.ToString() is "linear" or "scaled_linear" or "squaredcos_cap_v2", "\"linear\", \"scaled_linear\" or \"squaredcos_cap_v2\"");
        r.Reject("timestep_spacing", n => ConfigReader.IsNull(n) || Spacings.Contains(n!.ToString()), "\"leading\", \"trailing\" or \"linspace\"");
        r.Reject("prediction_type", n => ConfigReader.IsNull(n) || n!.ToString() is "epsilon" or "v_prediction", "\"epsilon\" or \"v_prediction\"");
        r.Reject("trained_betas", ConfigReader.IsNull, "null");
        var c = new SchedulerConfig
        {
            ClassName = r.String("_class_name", "DDIMScheduler")!,
            NumTrainTimesteps = r.Int("num_train_timesteps", 1000),
            BetaStart = r.Double("beta_start", 0.0001),
            BetaEnd = r.Double("beta_end", 0.02),
            BetaSchedule = r.String("beta_schedule", "linear")!,
            StepsOffset = r.Int("steps_offset", 0),
            SetAlphaToOne = r.Bool("set_alpha_to_one", true),
            TimestepSpacing = r.String("timestep_spacing"),
            PredictionType = r.String("prediction_type", "epsilon")!,
            ClipSample = r.Bool("clip_sample", false),
            ClipSampleRange = r.Double("clip_sample_range", 1.0),
            Json = r.Json,
        };
        r.Positive("num_train_timesteps", c.NumTrainTimesteps, 100_000);
        if (c.BetaStart <= 0 || c.BetaEnd >= 1 || c.BetaStart > c.BetaEnd)
        {
            throw new CheckpointException($"{path}: $.beta_start/$.beta_end: expected 0 < beta_start ≤ beta_end < 1");
        }
        return c;
    }

    public JsonObject ToJson()
    {
        var o = JsonNode.Parse(Json.ToJsonString())!.AsObject();
        o["_class_name"] = ClassName;
        o["num_train_timesteps"] = NumTrainTimesteps;
        o["beta_start"] = BetaStart;
        o["beta_end"] = BetaEnd;
        o["beta_schedule"] = BetaSchedule;
        o["steps_offset"] = StepsOffset;
        o["set_alpha_to_one"] = SetAlphaToOne;
        o["prediction_type"] = PredictionType;
        o["clip_sample"] = ClipSample;
        if (TimestepSpacing is not null)
        {
            o["timestep_spacing"] = TimestepSpacing;
        }
        return o;
    }

    /// <summary>ᾱ_t for t = 0 … N−1, accumulated in float32 as diffusers does.</summary>
    public float[] AlphasCumprod()
    {
        var n = NumTrainTimesteps;
        var betas = new double[n];
        for (var i = 0; i < n; i++)
        {
            betas[i] = BetaSchedule switch
            {
                "scaled_linear" => Math.Pow((float)(Math.Sqrt(BetaStart) + (Math.Sqrt(BetaEnd) - Math.Sqrt(BetaStart)) * i / (n - 1)), 2),
                "squaredcos_cap_v2" => Math.Min(1 - CosineAlphaBar((i + 1.0) / n) / CosineAlphaBar((double)i / n), 0.999),
                _ => BetaStart + (BetaEnd - BetaStart) * i / (n - 1),
            };
        }
        var result = new float[n];
        var acc = 1f;
        for (var i = 0; i < n; i++)
        {
            acc *= 1f - (float)betas[i];
            result[i] = acc;
        }
        return result;
    }

    private static double CosineAlphaBar(double t) => Math.Pow(Math.Cos((t + 0.008) / 1.008 * Math.PI / 2), 2);
}

/// <summary>One scheduler step's results: the next latent and the predicted clean sample x̂0 (DT-visualization).</summary>
public sealed record SchedulerStep(Tensor Prev, Tensor X0);

/// <summary>
/// A diffusers-compatible sampler over an index into its timestep list (PNDM repeats a timestep, so indices, not
/// timesteps, identify a step). Stateful samplers (PNDM, LMS) reset in <see cref="SetTimesteps"/>.
/// </summary>
public abstract class Scheduler
{
    public static readonly string[] Names = ["ddpm", "ddim", "pndm", "euler", "lms"];

    protected Scheduler(SchedulerConfig config)
    {
        Config = config;
        AlphasCumprod = config.AlphasCumprod();
    }

    public SchedulerConfig Config { get; }
    public float[] AlphasCumprod { get; }
    public abstract string Name { get; }

    /// <summary>The timestep passed to the UNet at each call (fractional for Euler/LMS).</summary>
    public double[] Timesteps { get; protected set; } = [];
    public int InferenceSteps { get; protected set; }

    /// <summary>Whether a run may start at an index other than 0 (false for PNDM, which keeps a history of ε).</summary>
    public virtual bool CanResume => true;

    public virtual double InitNoiseSigma => 1.0;

    public abstract void SetTimesteps(int steps);

    public virtual Tensor ScaleModelInput(Tensor x, int index) => x;

    /// <summary>One step from index i: the model output (ε or v), the current latent, a generator for stochastic samplers.</summary>
    public abstract SchedulerStep Step(Tensor modelOutput, int index, Tensor x, Generator? generator = null);

    /// <summary>The latent at timestep index i of a clean sample: √ᾱ x0 + √(1−ᾱ) ε (σ-space samplers: x0 + σε).</summary>
    public virtual Tensor AddNoise(Tensor x0, Tensor noise, int index) => AddNoiseAt(x0, noise, (int)Math.Round(Timesteps[index]));

    /// <summary>The forward process at an integer training timestep t.</summary>
    public Tensor AddNoiseAt(Tensor x0, Tensor noise, int t)
    {
        var a = AlphasCumprod[Math.Clamp(t, 0, AlphasCumprod.Length - 1)];
        return x0.mul(Scalars.Of(Math.Sqrt(a))).Plus(noise.mul(Scalars.Of(Math.Sqrt(1 - a))));
    }

    /// <summary>x̂0 of the latent x at index i from the model output.</summary>
    public virtual Tensor PredictX0(Tensor modelOutput, int index, Tensor x)
    {
        var a = AlphasCumprod[(int)Math.Round(Timesteps[index])];
        return X0FromOutput(modelOutput, x, a);
    }

    /// <summary>x̂0 and ε from a model output at ᾱ, for epsilon and v_prediction models.</summary>
    protected Tensor X0FromOutput(Tensor output, Tensor x, double alphaBar)
    {
        double sa = Math.Sqrt(alphaBar), sb = Math.Sqrt(1 - alphaBar);
        var x0 = Config.PredictionType == "v_prediction"
            ? x.mul(Scalars.Of(sa)) - output.mul(Scalars.Of(sb))
            : (x - output.mul(Scalars.Of(sb))).mul(Scalars.Of(1 / sa));
        return Config.ClipSample ? x0.clamp(Scalars.Of(-Config.ClipSampleRange), Scalars.Of(Config.ClipSampleRange)) : x0;
    }

    protected Tensor EpsFromOutput(Tensor output, Tensor x, double alphaBar) => Config.PredictionType == "v_prediction"
        ? output.mul(Scalars.Of(Math.Sqrt(alphaBar))).Plus(x.mul(Scalars.Of(Math.Sqrt(1 - alphaBar))))
        : output;

    protected void CheckSteps(int steps)
    {
        if (steps < 1 || steps > Config.NumTrainTimesteps)
        {
            throw new ArgumentOutOfRangeException(nameof(steps), $"steps must be in [1, {Config.NumTrainTimesteps}], got {steps}");
        }
        InferenceSteps = steps;
    }

    /// <summary>
    /// The n timesteps of a spacing, as diffusers computes them (numpy's round-half-even): leading
    /// <c>(arange(n)·(N//n))[::-1] + offset</c>; trailing <c>round(arange(N, 0, −N/n)) − 1</c>; linspace
    /// <c>linspace(0, N−1, n)[::-1]</c>, rounded when <paramref name="integer"/>.
    /// </summary>
    public static double[] Spacing(string spacing, int trainSteps, int n, int offset, bool integer)
    {
        var ts = new double[n];
        for (var i = 0; i < n; i++)
        {
            ts[i] = spacing switch
            {
                "leading" => (double)(n - 1 - i) * (trainSteps / n) + offset,
                "trailing" => Math.Round(trainSteps - i * ((double)trainSteps / n), MidpointRounding.ToEven) - 1,
                "linspace" => n == 1 ? 0 : (trainSteps - 1) * (double)(n - 1 - i) / (n - 1),
                _ => throw new ArgumentException($"unknown timestep spacing \"{spacing}\" (expected leading, trailing or linspace)"),
            };
            if (integer || spacing != "linspace")
            {
                ts[i] = Math.Round(ts[i], MidpointRounding.ToEven);
            }
        }
        return ts;
    }

    /// <summary>A scheduler by name (ddpm, ddim, pndm, euler, lms) or by the config's class when name is null.</summary>
    public static Scheduler Create(string? name, SchedulerConfig config)
    {
        var key = name ?? config.ClassName switch
        {
            "DDPMScheduler" => "ddpm",
            "PNDMScheduler" => "pndm",
            "EulerDiscreteScheduler" => "euler",
            "LMSDiscreteScheduler" => "lms",
            _ => "ddim",
        };
        return key.ToLowerInvariant() switch
        {
            "ddpm" => new DdpmScheduler(config),
            "ddim" => new DdimScheduler(config),
            "pndm" or "plms" => new PndmScheduler(config),
            "euler" => new EulerScheduler(config),
            "lms" => new LmsScheduler(config),
            _ => throw new ArgumentException($"unknown scheduler \"{name}\" (expected one of {string.Join(", ", Names)})"),
        };
    }
}

/// <summary>DDPMScheduler (fixed_small variance): ancestral sampling, noise at every step but the last.</summary>
public sealed class DdpmScheduler(SchedulerConfig config) : Scheduler(config)
{
    public override string Name => "ddpm";

    public override void SetTimesteps(int steps)
    {
        CheckSteps(steps);
        Timesteps = Spacing(Config.TimestepSpacing ?? "leading", Config.NumTrainTimesteps, steps, Config.StepsOffset, true);
    }

    public override SchedulerStep Step(Tensor modelOutput, int index, Tensor x, Generator? generator = null)
    {
        var t = (int)Timesteps[index];
        var prevT = t - Config.NumTrainTimesteps / InferenceSteps;
        double a = AlphasCumprod[t], ap = prevT >= 0 ? AlphasCumprod[prevT] : 1.0;
        double beta = 1 - a, betaPrev = 1 - ap, curAlpha = a / ap, curBeta = 1 - curAlpha;
        var x0 = X0FromOutput(modelOutput, x, a);
        var mean = x0.mul(Scalars.Of(Math.Sqrt(ap) * curBeta / beta)).Plus(x.mul(Scalars.Of(Math.Sqrt(curAlpha) * betaPrev / beta)));
        if (t > 0)
        {
            var variance = Math.Max(betaPrev / beta * curBeta, 1e-20);
            mean = mean.Plus(randn(x.shape, dtype: x.dtype, generator: generator).mul(Scalars.Of(Math.Sqrt(variance))));
        }
        return new SchedulerStep(mean, x0);
    }
}

/// <summary>
/// DDIMScheduler with η (0: deterministic; 1: DDPM-like) and, for the erasure noise probe, the absolute-value variant
/// <c>x' = √ᾱ' x̂0 + √|1−ᾱ'−σ²| ε̂ + v·σ·z</c> that admits η &gt; 1 (v = <see cref="VarianceScale"/>).
/// </summary>
public sealed class DdimScheduler(SchedulerConfig config) : Scheduler(config)
{
    public override string Name => "ddim";
    public double Eta { get; set; }
    public double VarianceScale { get; set; } = 1.0;
    public bool AbsoluteVariance { get; set; }

    public override void SetTimesteps(int steps)
    {
        CheckSteps(steps);
        Timesteps = Spacing(Config.TimestepSpacing ?? "leading", Config.NumTrainTimesteps, steps, Config.StepsOffset, true);
    }

    /// <summary>ᾱ of the step after index i: the timestep N/n earlier, or ᾱ_0 (1 with set_alpha_to_one) below 0.</summary>
    public double PrevAlpha(int index)
    {
        var prevT = (int)Timesteps[index] - Config.NumTrainTimesteps / InferenceSteps;
        return prevT >= 0 ? AlphasCumprod[prevT] : Config.SetAlphaToOne ? 1.0 : AlphasCumprod[0];
    }

    public override SchedulerStep Step(Tensor modelOutput, int index, Tensor x, Generator? generator = null)
    {
        var t = (int)Timesteps[index];
        double a = AlphasCumprod[t], ap = PrevAlpha(index);
        var x0 = X0FromOutput(modelOutput, x, a);
        var eps = Config.ClipSample
            ? (x - x0.mul(Scalars.Of(Math.Sqrt(a)))).mul(Scalars.Of(1 / Math.Sqrt(1 - a)))
            : EpsFromOutput(modelOutput, x, a);
        var variance = (1 - ap) / (1 - a) * (1 - a / ap);
        var sigma = Eta * Math.Sqrt(Math.Max(variance, 0));
        var dirSq = 1 - ap - sigma * sigma;
        if (dirSq < 0 && !AbsoluteVariance)
        {
            throw new ArgumentOutOfRangeException(nameof(Eta), $"DDIM with η = {Eta} makes 1 − ᾱ' − σ² negative; use the absolute-value variant for η > 1");
        }
        var prev = x0.mul(Scalars.Of(Math.Sqrt(ap))).Plus(eps.mul(Scalars.Of(Math.Sqrt(Math.Abs(dirSq)))));
        if (Eta > 0)
        {
            prev = prev.Plus(randn(x.shape, dtype: x.dtype, generator: generator).mul(Scalars.Of(VarianceScale * sigma)));
        }
        return new SchedulerStep(prev, x0);
    }
}

/// <summary>PNDMScheduler with skip_prk_steps (PLMS), SD 1.x's default: 4th-order linear multistep on ε.</summary>
public sealed class PndmScheduler(SchedulerConfig config) : Scheduler(config)
{
    private readonly List<Tensor> _ets = [];
    private Tensor? _curSample;
    private int _counter;

    public override string Name => "pndm";
    public override bool CanResume => false;

    public override void SetTimesteps(int steps)
    {
        CheckSteps(steps);
        int n = Config.NumTrainTimesteps, ratio = n / steps;
        var spacing = Config.TimestepSpacing ?? "leading";
        var baseTs = spacing switch
        {
            "linspace" => Enumerable.Range(0, steps).Select(i => Math.Round(steps == 1 ? 0 : (n - 1) * (double)i / (steps - 1), MidpointRounding.ToEven)).ToArray(),
            "trailing" => Spacing("trailing", n, steps, 0, true).Reverse().ToArray(),
            _ => Enumerable.Range(0, steps).Select(i => (double)i * ratio + Config.StepsOffset).ToArray(),
        };
        var plms = baseTs.Take(steps - 1).Concat(steps >= 2 ? [baseTs[^2]] : []).Concat([baseTs[^1]]).Reverse().ToArray();
        Timesteps = plms;
        Reset();
    }

    private void Reset()
    {
        foreach (var e in _ets)
        {
            e.Dispose();
        }
        _ets.Clear();
        _curSample?.Dispose();
        _curSample = null;
        _counter = 0;
    }

    public override SchedulerStep Step(Tensor modelOutput, int index, Tensor x, Generator? generator = null)
    {
        var ratio = Config.NumTrainTimesteps / InferenceSteps;
        var t = (int)Timesteps[index];
        var prevT = t - ratio;
        var x0 = PredictX0(modelOutput, index, x);
        var eps = EpsFromOutput(modelOutput, x, AlphasCumprod[t]);
        if (_counter != 1)
        {
            while (_ets.Count > 3)
            {
                _ets[0].Dispose();
                _ets.RemoveAt(0);
            }
            _ets.Add(eps.detach().clone().DetachFromDisposeScope());
        }
        else
        {
            prevT = t;
            t += ratio;
        }
        Tensor e;
        var sample = x;
        if (_ets.Count == 1 && _counter == 0)
        {
            e = eps;
            _curSample?.Dispose();
            _curSample = x.detach().clone().DetachFromDisposeScope();
        }
        else if (_ets.Count == 1 && _counter == 1)
        {
            e = eps.Plus(_ets[^1]).mul(Scalars.Of(0.5));
            sample = _curSample!;
        }
        else if (_ets.Count == 2)
        {
            e = (_ets[^1].mul(Scalars.Of(3.0)) - _ets[^2]).mul(Scalars.Of(0.5));
        }
        else if (_ets.Count == 3)
        {
            e = (_ets[^1].mul(Scalars.Of(23.0)) - _ets[^2].mul(Scalars.Of(16.0))).Plus(_ets[^3].mul(Scalars.Of(5.0))).mul(Scalars.Of(1.0 / 12));
        }
        else
        {
            e = ((_ets[^1].mul(Scalars.Of(55.0)) - _ets[^2].mul(Scalars.Of(59.0))).Plus(_ets[^3].mul(Scalars.Of(37.0))) - _ets[^4].mul(Scalars.Of(9.0))).mul(Scalars.Of(1.0 / 24));
        }
        double a = AlphasCumprod[t], ap = prevT >= 0 ? AlphasCumprod[prevT] : Config.SetAlphaToOne ? 1.0 : AlphasCumprod[0];
        double b = 1 - a, bp = 1 - ap;
        var denom = a * Math.Sqrt(bp) + Math.Sqrt(a * b * ap);
        var prev = sample.mul(Scalars.Of(Math.Sqrt(ap / a))) - e.mul(Scalars.Of((ap - a) / denom));
        if (_counter == 1)
        {
            _curSample?.Dispose();
            _curSample = null;
        }
        _counter++;
        return new SchedulerStep(prev, x0);
    }
}

/// <summary>Shared σ-space machinery of Euler and LMS: σ_t = √((1−ᾱ)/ᾱ) interpolated at the (fractional) timesteps, 0 appended.</summary>
public abstract class SigmaScheduler(SchedulerConfig config) : Scheduler(config)
{
    public double[] Sigmas { get; private set; } = [];

    public override void SetTimesteps(int steps)
    {
        CheckSteps(steps);
        var spacing = Config.TimestepSpacing ?? "linspace";
        Timesteps = Spacing(spacing, Config.NumTrainTimesteps, steps, Config.StepsOffset, false);
        var all = AlphasCumprod.Select(a => Math.Sqrt((1 - a) / (double)a)).ToArray();
        Sigmas = Timesteps.Select(t => Interp(all, t)).Append(0.0).ToArray();
        OnSetTimesteps();
    }

    protected virtual void OnSetTimesteps()
    {
    }

    private static double Interp(double[] values, double t)
    {
        if (t <= 0)
        {
            return values[0];
        }
        if (t >= values.Length - 1)
        {
            return values[^1];
        }
        var lo = (int)Math.Floor(t);
        var f = t - lo;
        return values[lo] * (1 - f) + values[lo + 1] * f;
    }

    public override double InitNoiseSigma
    {
        get
        {
            var max = Sigmas.Max();
            return (Config.TimestepSpacing ?? "linspace") is "linspace" or "trailing" ? max : Math.Sqrt(max * max + 1);
        }
    }

    public override Tensor ScaleModelInput(Tensor x, int index) => x.mul(Scalars.Of(1 / Math.Sqrt(Sigmas[index] * Sigmas[index] + 1)));

    public override Tensor AddNoise(Tensor x0, Tensor noise, int index) => x0.Plus(noise.mul(Scalars.Of(Sigmas[index])));

    public override Tensor PredictX0(Tensor modelOutput, int index, Tensor x)
    {
        var s = Sigmas[index];
        return Config.PredictionType == "v_prediction"
            ? modelOutput.mul(Scalars.Of(-s / Math.Sqrt(s * s + 1))).Plus(x.mul(Scalars.Of(1 / (s * s + 1))))
            : x - modelOutput.mul(Scalars.Of(s));
    }
}

/// <summary>EulerDiscreteScheduler (no churn): x' = x + (x − x̂0)/σ·(σ' − σ).</summary>
public sealed class EulerScheduler(SchedulerConfig config) : SigmaScheduler(config)
{
    public override string Name => "euler";

    public override SchedulerStep Step(Tensor modelOutput, int index, Tensor x, Generator? generator = null)
    {
        var s = Sigmas[index];
        var x0 = PredictX0(modelOutput, index, x);
        var derivative = (x - x0).mul(Scalars.Of(1 / s));
        return new SchedulerStep(x.Plus(derivative.mul(Scalars.Of(Sigmas[index + 1] - s))), x0);
    }
}

/// <summary>LMSDiscreteScheduler (order 4): derivatives weighted by the integrals of their Lagrange basis (2-point Gauss–Legendre, exact for cubics).</summary>
public sealed class LmsScheduler(SchedulerConfig config) : SigmaScheduler(config)
{
    private const int Order = 4;
    private readonly List<Tensor> _derivatives = [];

    public override string Name => "lms";
    public override bool CanResume => false;

    protected override void OnSetTimesteps()
    {
        foreach (var d in _derivatives)
        {
            d.Dispose();
        }
        _derivatives.Clear();
    }

    public override SchedulerStep Step(Tensor modelOutput, int index, Tensor x, Generator? generator = null)
    {
        var s = Sigmas[index];
        var x0 = PredictX0(modelOutput, index, x);
        _derivatives.Add((x - x0).mul(Scalars.Of(1 / s)).detach().clone().DetachFromDisposeScope());
        if (_derivatives.Count > Order)
        {
            _derivatives[0].Dispose();
            _derivatives.RemoveAt(0);
        }
        var order = Math.Min(index + 1, Order);
        var prev = x;
        for (var k = 0; k < order; k++)
        {
            prev = prev.Plus(_derivatives[_derivatives.Count - 1 - k].mul(Scalars.Of(Coefficient(order, index, k))));
        }
        return new SchedulerStep(prev, x0);
    }

    /// <summary>∫ from σ_t to σ_{t+1} of Π_{k≠j} (τ − σ_{t−k})/(σ_{t−j} − σ_{t−k}) dτ.</summary>
    public double Coefficient(int order, int t, int current)
    {
        double Basis(double tau)
        {
            var prod = 1.0;
            for (var k = 0; k < order; k++)
            {
                if (k != current)
                {
                    prod *= (tau - Sigmas[t - k]) / (Sigmas[t - current] - Sigmas[t - k]);
                }
            }
            return prod;
        }
        double a = Sigmas[t], b = Sigmas[t + 1], mid = (a + b) / 2, half = (b - a) / 2, node = half / Math.Sqrt(3);
        return half * (Basis(mid - node) + Basis(mid + node));
    }
}
