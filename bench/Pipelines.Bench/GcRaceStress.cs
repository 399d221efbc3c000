using Pipelines.Models.Diffusion;
using Pipelines.Models.Diffusion.Toy;
using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Bench;

/// <summary>
/// The runtimes under a GC hammer: one thread collects and finalizes without pause while two threads run small
/// language-model forwards (GPT-2 and Llama layouts), one trains both with StableAdamW, and one samples the toy
/// diffusion model with three schedulers, each step in a dispose scope as the activities do. A TorchSharp object that
/// nothing references during a native call (a temporary Scalar) is then freed under libtorch within seconds; before
/// the Scalar ban this crashed in the attention's bias add within about 16 s. Exit 0 and one line when nothing crashed.
/// Usage: dotnet run -c Release --project bench/Pipelines.Bench -- gc-race [SECONDS=30]
/// </summary>
public static class GcRaceStress
{
    public static int Run(string[] args)
    {
        TorchRuntime.EnsureLoaded();
        var seconds = args.Length > 0 && int.TryParse(args[0], out var s) ? s : 30;
        var stop = DateTime.UtcNow.AddSeconds(seconds);
        long forwards = 0, trainingSteps = 0, samplings = 0;
        var threads = new List<Thread>
        {
            new(() =>
            {
                while (DateTime.UtcNow < stop)
                {
                    GC.Collect();
                    GC.WaitForPendingFinalizers();
                }
            }),
        };
        foreach (var config in new[] { Gpt2, Llama })
        {
            threads.Add(new Thread(() =>
            {
                var model = new HookedTransformer(config).InitWeights(1, std: 0.2);
                using var tokens = Tokens();
                using var noGrad = no_grad();
                while (DateTime.UtcNow < stop)
                {
                    using var scope = NewDisposeScope();
                    model.Forward(tokens).sum().item<float>();
                    Interlocked.Increment(ref forwards);
                }
            }));
        }
        threads.Add(new Thread(() =>
        {
            var models = new[] { new HookedTransformer(Gpt2).InitWeights(2, std: 0.2), new HookedTransformer(Llama).InitWeights(2, std: 0.2) };
            var optimizers = models.Select(m => new StableAdamW(m.parameters(), 1e-3)).ToArray();
            using var tokens = Tokens();
            while (DateTime.UtcNow < stop)
            {
                for (var i = 0; i < models.Length; i++)
                {
                    using var scope = NewDisposeScope();
                    var logits = models[i].Forward(tokens);
                    var loss = F.cross_entropy(logits.view(-1, logits.shape[2]), tokens.view(-1));
                    optimizers[i].zero_grad();
                    loss.backward();
                    optimizers[i].step();
                }
                Interlocked.Increment(ref trainingSteps);
            }
        }));
        threads.Add(new Thread(() =>
        {
            var o = new ToyDiffusionOptions();
            var pipe = ToyDiffusionTrainer.Create(new ToyWorld(o.Size, o.Textures), 1);
            using var noGrad = no_grad();
            while (DateTime.UtcNow < stop)
            {
                foreach (var name in new[] { "ddim", "pndm", "euler" })
                {
                    using var scope = NewDisposeScope();
                    var scheduler = Scheduler.Create(name, pipe.SchedulerConfig);
                    scheduler.SetTimesteps(4);
                    using var g = new Generator(5);
                    var x = randn([2, pipe.Unet.Config.InChannels, pipe.DefaultSize / pipe.DownFactor, pipe.DefaultSize / pipe.DownFactor], generator: g);
                    pipe.Decode(pipe.Denoise(scheduler, x, pipe.EncodePrompts(["", ""]), pipe.EncodePrompts(["a red triangle", "a blue circle"]), 3.0)).sum().item<float>();
                }
                Interlocked.Increment(ref samplings);
            }
        }));
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Console.WriteLine($"gc-race: {forwards} forwards, {trainingSteps} training steps (two models), {samplings} sampling rounds (three schedulers) in {seconds} s under a GC hammer: no crash");
        return 0;
    }

    private static Tensor Tokens()
    {
        using var g = new Generator(5);
        return randint(0, 50, [4, 16], generator: g);
    }

    private static readonly TransformerConfig Gpt2 = new()
    {
        Architecture = "gpt2", DModel = 64, NLayers = 2, NHeads = 4, DMlp = 128, DVocab = 50, NCtx = 32,
        Act = Activation.GeluNew, TiedEmbeddings = true, EosTokenId = 0, BosTokenId = 0,
    };

    private static readonly TransformerConfig Llama = new()
    {
        Architecture = "llama", DModel = 32, NLayers = 2, NHeads = 4, NKvHeads = 2, DMlp = 48, DVocab = 50, NCtx = 32,
        Norm = NormKind.RmsNorm, NormBias = false, Positional = PositionalKind.Rotary, RotaryBase = 500000, Act = Activation.Silu,
        GatedMlp = true, QkvBias = false, AttnOutBias = false, MlpBias = false, NormEps = 1e-5,
    };
}
