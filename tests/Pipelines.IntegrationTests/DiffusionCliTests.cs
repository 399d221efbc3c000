using Pipelines.Models.Checkpoints;
using Pipelines.Models.Diffusion;
using static TorchSharp.torch;

namespace Pipelines.IntegrationTests;

/// <summary>The `pipelines diffusion` commands as a user runs them, on a random folder in diffusers' layout.</summary>
public sealed class DiffusionCliTests : IDisposable
{
    private readonly Cli _cli = new();

    [Fact]
    public void InfoSampleAndTensorCommandsWorkOnAPipelineFolder()
    {
        var dir = Path.Combine(_cli.Root, "sd");
        var init = _cli.Run("diffusion", "init", "--out", dir, "--fp16", "--seed", "4");
        Assert.True(init.ExitCode == 0, init.All);
        var info = _cli.Run("diffusion", "info", "--model", dir);
        Assert.True(info.ExitCode == 0, info.All);
        Assert.Contains("792,964", info.Stdout);
        Assert.Contains("PNDMScheduler", info.Stdout);

        var png = Path.Combine(_cli.Root, "out.png");
        var sample = _cli.Run("diffusion", "sample", "--model", dir, "--prompt", "a red cat", "--steps", "4", "--scheduler", "euler", "--images", "2", "--out", png);
        Assert.True(sample.ExitCode == 0, sample.All);
        var bytes = File.ReadAllBytes(png);
        Assert.Equal(new byte[] { 0x89, 0x50, 0x4E, 0x47 }, bytes.Take(4));

        // encode-text then eps with those states: the CLI's eps equals the runtime's on the same tensors.
        var text = Path.Combine(_cli.Root, "text.safetensors");
        Assert.Equal(0, _cli.Run("diffusion", "encode-text", "--model", dir, "--prompt", "a red cat", "--out", text).ExitCode);
        Tensor states;
        using (var f = SafetensorsFile.Open(text))
        {
            Assert.Equal([1L, 77], f.Entries["input_ids"].Shape);
            states = f.Read("last_hidden_state");
        }
        var input = Path.Combine(_cli.Root, "in.safetensors");
        var sampleLatents = randn(1, 4, 9, 7);
        SafetensorsFile.Write(input, [("sample", sampleLatents), ("timestep", tensor(412.5f)), ("encoder_hidden_states", states)]);
        var epsFile = Path.Combine(_cli.Root, "eps.safetensors");
        var eps = _cli.Run("diffusion", "eps", "--model", dir, "--input", input, "--out", epsFile);
        Assert.True(eps.ExitCode == 0, eps.All);
        using (var pipe = DiffusionPipeline.Load(dir))
        using (var f = SafetensorsFile.Open(epsFile))
        using (no_grad())
        {
            var expected = pipe.Unet.Forward(sampleLatents, tensor(412.5f), states);
            Assert.True((f.Read("eps") - expected).abs().max().item<float>() < 1e-5f);
        }
        var decoded = Path.Combine(_cli.Root, "image.safetensors");
        SafetensorsFile.Write(input, [("latents", randn(1, 4, 8, 8))]);
        Assert.Equal(0, _cli.Run("diffusion", "decode", "--model", dir, "--input", input, "--out", decoded).ExitCode);
        using (var f = SafetensorsFile.Open(decoded))
        {
            Assert.Equal([1L, 3, 16, 16], f.Entries["image"].Shape);
        }

        // Bad input: one line, exit code 2, no stack trace.
        SafetensorsFile.Write(input, [("sample", randn(1, 4, 8, 8))]);
        var missing = _cli.Run("diffusion", "eps", "--model", dir, "--input", input, "--out", epsFile);
        Assert.Equal(2, missing.ExitCode);
        Assert.Contains("no tensor \"timestep\"", missing.Stderr);
        File.WriteAllText(Path.Combine(dir, "unet", "config.json"), "{\"block_out_channels\": [32, 64], \"layers_per_block\": 1, \"attention_head_dim\": 3}");
        var broken = _cli.Run("diffusion", "info", "--model", dir);
        Assert.Equal(2, broken.ExitCode);
        Assert.Contains("config.json", broken.Stderr);
        Assert.DoesNotContain("   at ", broken.All);
        var nowhere = _cli.Run("diffusion", "sample", "--model", Path.Combine(_cli.Root, "nothing"), "--prompt", "x", "--out", png);
        Assert.Equal(2, nowhere.ExitCode);
        Assert.Contains("no such directory", nowhere.Stderr);
    }

    public void Dispose() => _cli.Dispose();
}
