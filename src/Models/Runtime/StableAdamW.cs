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
    private const string Magic = "pipelines.adamw.v1";
    private readonly List<Tensor> _parameters;
    private readonly List<Tensor> _m = [], _v = [];
    private readonly double _beta1, _beta2, _eps, _weightDecay;
    private readonly bool _coupled;
    private int _step;

    /// <param name="parameters">Leaf tensors that require grad (a module's parameters, or a probe's free tensors).</param>
    /// <param name="coupledWeightDecay">
    /// PyTorch's <c>Adam(weight_decay=…)</c>: the decay is added to the gradient (L2) instead of applied to the weights.
    /// </param>
    public StableAdamW(IEnumerable<Tensor> parameters, double lr, double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8,
        double weightDecay = 0.01, bool coupledWeightDecay = false)
    {
        _parameters = parameters.ToList();
        LearningRate = lr;
        (_beta1, _beta2, _eps, _weightDecay, _coupled) = (beta1, beta2, eps, weightDecay, coupledWeightDecay);
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
        using Scalar decay = Scalars.Owned(1 - LearningRate * _weightDecay), b1 = Scalars.Owned(_beta1), oneMinusB1 = Scalars.Owned(1 - _beta1),
            b2 = Scalars.Owned(_beta2), oneMinusB2 = Scalars.Owned(1 - _beta2), rootBc2 = Scalars.Owned(Math.Sqrt(bc2)), eps = Scalars.Owned(_eps),
            stepSize = Scalars.Owned(-LearningRate / bc1), decayScalar = Scalars.Owned(_weightDecay);
        for (var i = 0; i < _parameters.Count; i++)
        {
            var p = _parameters[i];
            var g = p.grad;
            if (g is null)
            {
                continue;
            }
            if (_weightDecay != 0 && _coupled)
            {
                g = g.add(p, decayScalar);
            }
            else if (_weightDecay != 0)
            {
                p.mul_(decay);
            }
            _m[i].mul_(b1).add_(g, oneMinusB1);
            _v[i].mul_(b2).addcmul_(g, g, oneMinusB2);
            var denom = _v[i].sqrt().div_(rootBc2).add_(eps, Scalars.Int(1));
            p.addcdiv_(_m[i], denom, stepSize);
        }
    }

    /// <summary>The number of steps taken (bias correction depends on it).</summary>
    public int Steps => _step;

    /// <summary>Writes the step count and both moments (a resume point); <see cref="Load"/> reads them back.</summary>
    public void Save(string path)
    {
        using var stream = File.Create(path);
        using var writer = new BinaryWriter(stream);
        writer.Write(Magic);
        writer.Write(_step);
        writer.Write(_parameters.Count);
        foreach (var t in _m.Concat(_v))
        {
            using var cpu = t.to(ScalarType.Float32, CPU).contiguous();
            writer.Write(cpu.shape.Length);
            foreach (var d in cpu.shape)
            {
                writer.Write(d);
            }
            var data = cpu.data<float>().ToArray();
            writer.Write(data.Length);
            writer.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
        }
    }

    /// <summary>Restores a <see cref="Save"/>d state for the same parameters (same order and shapes); else throws and changes nothing.</summary>
    public void Load(string path)
    {
        using var stream = File.OpenRead(path);
        using var reader = new BinaryReader(stream);
        if (reader.ReadString() != Magic)
        {
            throw new InvalidDataException("not a saved optimizer state");
        }
        var step = reader.ReadInt32();
        if (reader.ReadInt32() != _parameters.Count)
        {
            throw new InvalidDataException("the saved optimizer state is for a different model");
        }
        // Read and check everything before touching the moments, so a refused file leaves the optimizer as it was.
        var moments = _m.Concat(_v).ToList();
        var read = new List<(float[] Data, long[] Shape)>();
        foreach (var t in moments)
        {
            var shape = new long[reader.ReadInt32()];
            for (var i = 0; i < shape.Length; i++)
            {
                shape[i] = reader.ReadInt64();
            }
            var data = new float[reader.ReadInt32()];
            if (!shape.SequenceEqual(t.shape) || data.Length != t.numel())
            {
                throw new InvalidDataException("the saved optimizer state is for a different model");
            }
            // ReadExactly: a stream may return fewer bytes than asked before its end; at the end it throws EndOfStreamException.
            reader.BaseStream.ReadExactly(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
            read.Add((data, shape));
        }
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        for (var i = 0; i < moments.Count; i++)
        {
            moments[i].copy_(tensor(read[i].Data, read[i].Shape));
        }
        _step = step;
    }

    public void Dispose()
    {
        foreach (var t in _m.Concat(_v))
        {
            t.Dispose();
        }
    }
}
