using Pipelines.Engine.Activities;
using Pipelines.Models.Common;
using Pipelines.Models.Runtime;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Pipelines.Activities.Causal;

/// <summary>Training settings for one featurizer unit (research/causal.md §2.5, §3).</summary>
public sealed record FeaturizerOptions
{
    public FeaturizerKind Kind { get; init; } = FeaturizerKind.Das;
    /// <summary>DAS: the subspace's dimension k.</summary>
    public int K { get; init; } = 16;
    public int Epochs { get; init; } = 3;
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 1e-2;
    /// <summary>DBM and PCA: the sparsity weight λ on Σσ(mask/T) (MIB's residual baselines use 0).</summary>
    public double Sparsity { get; init; }
    public long Seed { get; init; }
}

/// <summary>
/// Trains featurizers with the model frozen, one per unit, on the interchange loss. Orthogonality follows research
/// §3.4: DAS keeps a free A [d, k] and uses W = Q·diag(sign(diag R)) from the thin QR of A; Boundless DAS uses a base
/// rotation times a Cayley transform, folded into the base each epoch. DBM gates neurons with σ(mask/T), T annealed
/// from 1 to 0.01; PCA fits components on the unit's base and source activations (z-scored for fitting, applied raw,
/// min(N, d) − 1 of them as MIB's TruncatedSVD keeps) and trains the same mask over them.
/// </summary>
public static class FeaturizerTraining
{
    /// <summary>Sign-fixed thin QR: the orthonormal Q with a positive diagonal of R, so QR of an orthonormal matrix returns it.</summary>
    public static Tensor QrSign(Tensor a)
    {
        var (q, r) = linalg.qr(a, linalg.QRMode.Reduced);
        var sign = r.diagonal().sign();
        sign = where(sign.eq(Scalars.Int(0)), ones_like(sign), sign);
        return q * sign.unsqueeze(0);
    }

    /// <summary>max |WᵀW − I|.</summary>
    public static double OrthogonalityError(Tensor w)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var w64 = w.to(ScalarType.Float64);
        return (w64.t().matmul(w64) - eye(w.shape[1], dtype: ScalarType.Float64, device: w.device)).abs().max().item<double>();
    }

    public static FeaturizerUnit Train(InterchangeRunner runner, IReadOnlyList<CounterfactualRow> rows, int layer, string position, int d, FeaturizerOptions o,
        Action<string>? log = null, CancellationToken ct = default)
    {
        if (o.Kind == FeaturizerKind.Identity)
        {
            return new FeaturizerUnit(layer, position, d, null, null);
        }
        using var sources = runner.SourceActivations(rows, layer, position, ct: ct);
        using var generator = new Generator((ulong)(o.Seed * 1_000_003 + layer * 101 + position.Length));
        var device = sources.device;
        var stepsPerEpoch = (rows.Count + o.BatchSize - 1) / o.BatchSize;
        var total = Math.Max(1, o.Epochs * stepsPerEpoch);
        Parameter? a = null, mask = null, x = null, boundary = null;
        Tensor? fixedBasis = null, rotation = null;
        var k = o.Kind switch { FeaturizerKind.Das => Math.Min(o.K, d), _ => d };
        switch (o.Kind)
        {
            case FeaturizerKind.Das:
                a = new Parameter(QrSign(randn([d, k], generator: generator).to(device)), requires_grad: true);
                break;
            case FeaturizerKind.Boundless:
                rotation = QrSign(randn([d, d], generator: generator).to(device));
                x = new Parameter(zeros([d, d], device: device), requires_grad: true);
                boundary = new Parameter(tensor(0.5f, device: device), requires_grad: true);
                break;
            case FeaturizerKind.Dbm:
                fixedBasis = eye(d, device: device);
                mask = new Parameter(zeros(d, device: device), requires_grad: true);
                break;
            default:
                fixedBasis = Pca(runner, rows, layer, position, sources, ct);
                k = (int)fixedBasis.shape[1];
                mask = new Parameter(zeros(k, device: device), requires_grad: true);
                break;
        }
        var parameters = new[] { a, mask, x }.Where(p => p is not null).Cast<Parameter>().ToList();
        using var optimizer = new StableAdamW(parameters, boundary is null ? o.LearningRate : 1e-3, weightDecay: 0);
        using var boundaryOptimizer = boundary is null ? null : new StableAdamW([boundary], 1e-2, weightDecay: 0);
        var order = Enumerable.Range(0, rows.Count).ToList();
        var rng = new SeededRandom(o.Seed + layer);
        var step = 0;
        double lastLoss = double.NaN;
        for (var epoch = 0; epoch < o.Epochs; epoch++)
        {
            rng.Shuffle(order);
            for (var start = 0; start < order.Count; start += o.BatchSize, step++)
            {
                ct.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var index = order.Skip(start).Take(o.BatchSize).ToList();
                var batch = index.Select(i => rows[i]).ToList();
                var batchSources = sources.index_select(0, tensor(index.Select(i => (long)i).ToArray(), device: device));
                var progress = (double)step / Math.Max(1, total - 1);
                var (basis, gate, penalty) = Current(o, d, a, mask, x, boundary, rotation, fixedBasis, progress);
                optimizer.zero_grad();
                boundaryOptimizer?.zero_grad();
                var loss = runner.Loss(batch, batchSources, layer, position, basis, gate);
                var objective = penalty is null ? loss : loss.Plus(penalty);
                objective.backward();
                optimizer.step();
                boundaryOptimizer?.step();
                if (boundary is not null)
                {
                    using var noGrad = no_grad();
                    boundary.clamp_(InterchangeRunner.S(1e-3), InterchangeRunner.S(1));
                }
                lastLoss = loss.item<float>();
            }
            if (x is not null && rotation is not null)
            {
                // Fold the Cayley factor into the base rotation, so the parametrisation stays near the identity.
                using var noGrad = no_grad();
                var folded = rotation.matmul(Cayley(x)).detach();
                rotation.Dispose();
                rotation = QrSign(folded);
                x.zero_();
            }
            log?.Invoke($"L{layer}.{position} epoch {epoch + 1}: loss {lastLoss:F4}");
        }
        using (no_grad())
        {
            var (basis, gate, _) = Current(o, d, a, mask, x, boundary, rotation, fixedBasis, 1.0);
            var w = basis.detach().to(ScalarType.Float32).cpu().MoveToOuterDisposeScope();
            IReadOnlyList<int>? indices = o.Kind switch
            {
                FeaturizerKind.Das => null,
                FeaturizerKind.Boundless => Enumerable.Range(0, d).Where(i => gate!.cpu().data<float>()[i] > 0.5f).ToList(),
                _ => Enumerable.Range(0, k).Where(i => mask!.cpu().data<float>()[i] > 0).ToList(),
            };
            var error = o.Kind is FeaturizerKind.Das or FeaturizerKind.Boundless ? OrthogonalityError(w) : (double?)null;
            foreach (var p in new Tensor?[] { a, mask, x, boundary, rotation, fixedBasis })
            {
                p?.Dispose();
            }
            return new FeaturizerUnit(layer, position, (int)w.shape[1], indices, error) { W = w };
        }
    }

    private static (Tensor Basis, Tensor? Gate, Tensor? Penalty) Current(FeaturizerOptions o, int d, Parameter? a, Parameter? mask, Parameter? x, Parameter? boundary,
        Tensor? rotation, Tensor? fixedBasis, double progress)
    {
        switch (o.Kind)
        {
            case FeaturizerKind.Das:
                return (QrSign(a!), null, null);
            case FeaturizerKind.Boundless:
            {
                var temperature = 50 + (0.1 - 50) * progress; // annealed linearly from 50 to 0.1
                var i = Scalars.Range(d, dtype: ScalarType.Float32, device: boundary!.device);
                var gate = i.Over(temperature).sigmoid() * (boundary.mul(Scalars.Int(d)) - i).Over(temperature).sigmoid();
                return (rotation!.matmul(Cayley(x!)), gate, boundary.mul(Scalars.Of(1.0)));
            }
            default:
            {
                var temperature = 1.0 + (0.01 - 1.0) * progress; // annealed linearly from 1 to 0.01
                var gate = progress >= 1.0 ? mask!.gt(Scalars.Int(0)).to(ScalarType.Float32) : mask!.Over(temperature).sigmoid();
                return (fixedBasis!, gate, o.Sparsity > 0 ? gate.sum().Times(o.Sparsity) : null);
            }
        }
    }

    /// <summary>The Cayley transform of the skew part of X: (I − A/2)⁻¹(I + A/2), A = tril(X) − tril(X)ᵀ.</summary>
    private static Tensor Cayley(Tensor x)
    {
        var lower = x.tril(-1);
        var skew = lower - lower.t();
        var identity = eye(x.shape[0], device: x.device);
        return linalg.solve(identity - skew.div(Scalars.Int(2)), identity.Plus(skew.div(Scalars.Int(2))));
    }

    /// <summary>PCA components of the unit's base and source activations: W [d, min(N, d) − 1], orthonormal columns.</summary>
    private static Tensor Pca(InterchangeRunner runner, IReadOnlyList<CounterfactualRow> rows, int layer, string position, Tensor sources, CancellationToken ct)
    {
        using var scope = NewDisposeScope();
        var swapped = rows.Select(r => r with { SourceIds = r.BaseIds, Positions = r.Positions.ToDictionary(p => p.Key, p => (p.Value.Base, p.Value.Base)) }).ToList();
        var bases = runner.SourceActivations(swapped, layer, position, ct: ct);
        var all = cat([bases.flatten(0, 1), sources.flatten(0, 1)], 0).to(ScalarType.Float64);
        var z = (all - all.mean([0], keepdim: true)) / all.std(0, keepdim: true).clamp_min(InterchangeRunner.S(1e-6));
        var (_, _, vh) = linalg.svd(z, fullMatrices: false);
        var n = (int)Math.Min(Math.Min(all.shape[0], all.shape[1]) - 1, vh.shape[0]);
        if (n < 1)
        {
            throw new ActivityException($"PCA at L{layer}.{position}: too few activations ({all.shape[0]}) for components");
        }
        return vh[TensorIndex.Slice(0, n)].t().to(ScalarType.Float32).contiguous().MoveToOuterDisposeScope();
    }
}
