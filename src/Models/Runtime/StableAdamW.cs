using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Pipelines.Models.Runtime;

/// <summary>
/// AdamW (PyTorch's update: decoupled weight decay, bias-corrected moments) whose scalars live until the update has
/// read them. TorchSharp's own optimisers pass temporary Scalars that the GC may finalize mid-call, which crashed
/// 1,000-step diffusion trainings inside <c>AdamW.step</c> ("Expected false to be true ... toDouble"); the long
/// training loops use this one. With weight decay 0 it is Adam.
/// </summary>
public sealed class StableAdamW : IDisposable
{
    private readonly List<Parameter> _parameters;
    private readonly List<Tensor> _m = [], _v = [];
    private readonly double _beta1, _beta2, _eps, _weightDecay;
    private int _step;

    public StableAdamW(IEnumerable<Parameter> parameters, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0.01)
    {
        _parameters = parameters.ToList();
        LearningRate = lr;
        (_beta1, _beta2, _eps, _weightDecay) = (beta1, beta2, eps, weightDecay);
        foreach (var p in _parameters)
        {
            _m.Add(zeros_like(p).DetachFromDisposeScope());
            _v.Add(zeros_like(p).DetachFromDisposeScope());
        }
    }

    /// <summary>The learning rate of the next step (schedules set it before each step).</summary>
    public double LearningRate { get; set; }

    public void zero_grad()
    {
        using var scope = NewDisposeScope();
        foreach (var p in _parameters)
        {
            p.grad?.zero_();
        }
    }

    public void step()
    {
        _step++;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        double bc1 = 1 - Math.Pow(_beta1, _step), bc2 = 1 - Math.Pow(_beta2, _step);
        using Scalar decay = (1 - LearningRate * _weightDecay).ToScalar(), b1 = _beta1.ToScalar(), oneMinusB1 = (1 - _beta1).ToScalar(),
            b2 = _beta2.ToScalar(), oneMinusB2 = (1 - _beta2).ToScalar(), rootBc2 = Math.Sqrt(bc2).ToScalar(), eps = _eps.ToScalar(),
            stepSize = (-LearningRate / bc1).ToScalar();
        for (var i = 0; i < _parameters.Count; i++)
        {
            var p = _parameters[i];
            var g = p.grad;
            if (g is null)
            {
                continue;
            }
            if (_weightDecay != 0)
            {
                p.mul_(decay);
            }
            _m[i].mul_(b1).add_(g, oneMinusB1);
            _v[i].mul_(b2).addcmul_(g, g, oneMinusB2);
            var denom = _v[i].sqrt().div_(rootBc2).add_(eps, Scalars.Int(1));
            p.addcdiv_(_m[i], denom, stepSize);
        }
    }

    public void Dispose()
    {
        foreach (var t in _m.Concat(_v))
        {
            t.Dispose();
        }
    }
}
