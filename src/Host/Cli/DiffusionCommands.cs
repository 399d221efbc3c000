using System.CommandLine;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Diffusion;
using Pipelines.Models.Runtime;
using Spectre.Console;
using static TorchSharp.torch;

namespace Pipelines.Host.Cli;

/// <summary>
/// <c>pipelines diffusion info | sample | eps | encode-text | decode</c>: a diffusers pipeline folder from the command
/// line. The tensor-in, tensor-out commands check the runtime against another implementation.
/// </summary>
public static class DiffusionCommands
{
    private static Option<string> ModelOption() => new("--model") { Description = "A diffusers pipeline folder (model_index.json, unet/, text_encoder/, tokenizer/, scheduler/, optional vae/)", Required = true };

    public static Command Diffusion(GlobalOptions g)
    {
        var infoModel = ModelOption();
        var info = new Command("info", "Components, parameter counts, stored dtypes, scheduler and tokenizer of a pipeline folder") { infoModel };
        info.SetAction((p, ct) => Run(g, p, () =>
        {
            var dir = p.GetValue(infoModel)!;
            using var pipe = DiffusionPipeline.Load(dir);
            var table = new Table().HideHeaders().AddColumns("", "");
            void Row(string k, string v) => table.AddRow(k, Markup.Escape(v));
            var u = pipe.Unet.Config;
            Row("unet", $"UNet2DConditionModel · {Count(pipe.Unet):N0} parameters · blocks [{string.Join(", ", u.BlockOutChannels)}] × {u.LayersPerBlock} · heads [{string.Join(", ", u.Heads)}] · in/out {u.InChannels}/{u.OutChannels} · cross-attention {u.CrossAttentionDim}");
            Row("vae", pipe.Vae is null ? "none (a pixel-space model)" : $"AutoencoderKL · {Count(pipe.Vae):N0} parameters · latent {pipe.Vae.Config.LatentChannels} ch, ÷{pipe.DownFactor} · scaling {pipe.Vae.Config.ScalingFactor}");
            var t = pipe.TextEncoder.Config;
            Row("text_encoder", $"CLIPTextModel · {Count(pipe.TextEncoder):N0} parameters · {t.Layers} layers × {t.Heads} heads · width {t.HiddenSize} · {t.HiddenAct}");
            Row("tokenizer", $"CLIP BPE · {pipe.Tokenizer.VocabSize:N0} tokens · {pipe.Tokenizer.MaxLength} positions · pad \"{pipe.Tokenizer.PadToken}\"");
            var s = pipe.SchedulerConfig;
            Row("scheduler", $"{s.ClassName} · {s.BetaSchedule} β {s.BetaStart}…{s.BetaEnd} · {s.NumTrainTimesteps} steps · offset {s.StepsOffset} · {s.PredictionType}{(s.TimestepSpacing is null ? "" : $" · {s.TimestepSpacing}")}");
            table.AddRow("default image", $"{pipe.DefaultSize}×{pipe.DefaultSize} px (computed in float32)");
            AnsiConsole.Write(table);
            return ExitCodes.Ok;
        }));

        var sModel = ModelOption();
        var prompt = new Option<string>("--prompt") { Description = "The prompt", Required = true };
        var negative = new Option<string>("--negative") { Description = "The negative prompt (classifier-free guidance's unconditional side)", DefaultValueFactory = _ => "" };
        var seed = new Option<long>("--seed") { Description = "Seed of the initial noise (image i uses seed + i)", DefaultValueFactory = _ => 0 };
        var steps = new Option<int>("--steps") { Description = "Denoising steps", DefaultValueFactory = _ => 50 };
        var scheduler = new Option<string?>("--scheduler") { Description = "ddpm, ddim, pndm, euler, lms (default: the folder's scheduler)" };
        var guidance = new Option<double>("--guidance") { Description = "Classifier-free guidance scale w (≤ 1: none)", DefaultValueFactory = _ => 7.5 };
        var eta = new Option<double>("--eta") { Description = "DDIM's η (0: deterministic)", DefaultValueFactory = _ => 0 };
        var images = new Option<int>("--images") { Description = "Images of the prompt, one seed each, tiled into one PNG", DefaultValueFactory = _ => 1 };
        var size = new Option<int?>("--size") { Description = "Image side in pixels (default: the UNet's sample_size × the VAE's factor)" };
        var outPng = new Option<string>("--out") { Description = "The PNG to write", Required = true };
        var sample = new Command("sample", "Text to image: sample a prompt and write a PNG") { sModel, prompt, negative, seed, steps, scheduler, guidance, eta, images, size, outPng };
        sample.SetAction((p, ct) => Run(g, p, () =>
        {
            var n = p.GetValue(images);
            if (n is < 1 or > 64)
            {
                return Output.Invalid("--images: expected 1 to 64");
            }
            if (p.GetValue(steps) is < 1 or > 1000)
            {
                return Output.Invalid("--steps: expected 1 to 1000");
            }
            using var pipe = DiffusionPipeline.Load(p.GetValue(sModel)!);
            var side = p.GetValue(size);
            var total = p.GetValue(steps);
            var request = new SampleRequest
            {
                Prompts = Enumerable.Repeat(p.GetValue(prompt)!, n).ToList(), Negative = p.GetValue(negative)!, Seed = p.GetValue(seed), Steps = total,
                Scheduler = p.GetValue(scheduler), Guidance = p.GetValue(guidance), Eta = p.GetValue(eta), Height = side, Width = side,
            };
            var started = DateTime.UtcNow;
            Tensor result = null!;
            AnsiConsole.Progress().AutoClear(true).Start(progress =>
            {
                var task = progress.AddTask("denoising", maxValue: total + 1);
                result = pipe.Sample(request, st => task.Value = st.Index + 1, ct);
            });
            var (width, height) = (result.shape[3], result.shape[2]);
            using (result)
            {
                var tiles = Enumerable.Range(0, n).Select(i => Png.FromTensor(result[i])).ToList();
                var scale = tiles[0].Width < 64 ? 4 : 1;
                Png.Write(p.GetValue(outPng)!, Png.Grid(tiles, (int)Math.Ceiling(Math.Sqrt(n)), scale));
            }
            AnsiConsole.WriteLine($"wrote {n} image(s) of {width}×{height} px to {p.GetValue(outPng)!} in {(DateTime.UtcNow - started).TotalSeconds:F1} s");
            return ExitCodes.Ok;
        }));

        var eModel = ModelOption();
        var eIn = new Option<string>("--input") { Description = "safetensors with sample [B,C,h,w], timestep (0-dim or [B], may be fractional), encoder_hidden_states [B,S,D]", Required = true };
        var eOut = new Option<string>("--out") { Description = "safetensors to write: eps", Required = true };
        var eps = new Command("eps", "The UNet's raw prediction for given tensors (for parity checks)") { eModel, eIn, eOut };
        eps.SetAction((p, ct) => Run(g, p, () =>
        {
            using var pipe = DiffusionPipeline.Load(p.GetValue(eModel)!);
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var inputs = ReadTensors(p.GetValue(eIn)!, "sample", "timestep", "encoder_hidden_states");
            var x = inputs["sample"];
            var ctx = inputs["encoder_hidden_states"];
            var t = inputs["timestep"];
            var u = pipe.Unet.Config;
            if (x.dim() != 4 || x.shape[1] != u.InChannels || x.shape[2] < 1 || x.shape[3] < 1)
            {
                return Output.Invalid($"{p.GetValue(eIn)}: tensor \"sample\" has shape [{string.Join(", ", x.shape)}], expected [B, {u.InChannels}, h, w]");
            }
            if (ctx.dim() != 3 || ctx.shape[0] != x.shape[0] || ctx.shape[2] != u.CrossAttentionDim)
            {
                return Output.Invalid($"{p.GetValue(eIn)}: tensor \"encoder_hidden_states\" has shape [{string.Join(", ", ctx.shape)}], expected [{x.shape[0]}, S, {u.CrossAttentionDim}]");
            }
            if (t.numel() != 1 && t.numel() != x.shape[0])
            {
                return Output.Invalid($"{p.GetValue(eIn)}: tensor \"timestep\" has {t.numel()} values, expected 1 or {x.shape[0]}");
            }
            var result = pipe.Unet.Forward(x.to(ScalarType.Float32), t, ctx.to(ScalarType.Float32));
            SafetensorsFile.Write(p.GetValue(eOut)!, [("eps", result)]);
            AnsiConsole.WriteLine($"wrote eps [{string.Join(", ", result.shape)}] to {p.GetValue(eOut)!}");
            return ExitCodes.Ok;
        }));

        var tModel = ModelOption();
        var tPrompt = new Option<string>("--prompt") { Description = "The prompt", Required = true };
        var tOut = new Option<string>("--out") { Description = "safetensors to write: input_ids [1,77] and last_hidden_state [1,77,D]", Required = true };
        var encode = new Command("encode-text", "Token ids and the text encoder's last hidden state of a prompt") { tModel, tPrompt, tOut };
        encode.SetAction((p, ct) => Run(g, p, () =>
        {
            using var pipe = DiffusionPipeline.Load(p.GetValue(tModel)!);
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var ids = pipe.Tokenize([p.GetValue(tPrompt)!]);
            var states = pipe.TextEncoder.Encode(ids);
            SafetensorsFile.Write(p.GetValue(tOut)!, [("input_ids", ids), ("last_hidden_state", states)]);
            AnsiConsole.WriteLine($"wrote input_ids [{string.Join(", ", ids.shape)}] and last_hidden_state [{string.Join(", ", states.shape)}] to {p.GetValue(tOut)!}");
            return ExitCodes.Ok;
        }));

        var dModel = ModelOption();
        var dIn = new Option<string>("--input") { Description = "safetensors with latents [B,C,h,w], already divided by the VAE's scaling factor", Required = true };
        var dOut = new Option<string>("--out") { Description = "safetensors to write: image [B,3,H,W]", Required = true };
        var decode = new Command("decode", "The VAE decoder's image for given latents") { dModel, dIn, dOut };
        decode.SetAction((p, ct) => Run(g, p, () =>
        {
            using var pipe = DiffusionPipeline.Load(p.GetValue(dModel)!);
            if (pipe.Vae is null)
            {
                return Output.Invalid($"{p.GetValue(dModel)}: a pixel-space pipeline has no VAE to decode with");
            }
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var z = ReadTensors(p.GetValue(dIn)!, "latents")["latents"];
            if (z.dim() != 4 || z.shape[1] != pipe.Vae.Config.LatentChannels)
            {
                return Output.Invalid($"{p.GetValue(dIn)}: tensor \"latents\" has shape [{string.Join(", ", z.shape)}], expected [B, {pipe.Vae.Config.LatentChannels}, h, w]");
            }
            var image = pipe.Vae.Decode(z.to(ScalarType.Float32));
            SafetensorsFile.Write(p.GetValue(dOut)!, [("image", image)]);
            AnsiConsole.WriteLine($"wrote image [{string.Join(", ", image.shape)}] to {p.GetValue(dOut)!}");
            return ExitCodes.Ok;
        }));

        var preset = new Option<string>("--preset") { Description = "tiny: diffusers' test configs (UNet [32, 64], VAE [32, 64], CLIP width 32)", DefaultValueFactory = _ => "tiny" };
        var iSeed = new Option<long>("--seed") { Description = "Seed of the random weights", DefaultValueFactory = _ => 0 };
        var iOut = new Option<string>("--out") { Description = "The folder to write", Required = true };
        var fp16 = new Option<bool>("--fp16") { Description = "Write the weights as *.fp16.safetensors variants" };
        var init = new Command("init", "Write a random pipeline folder in diffusers' layout (for tests and parity checks)") { preset, iSeed, iOut, fp16 };
        init.SetAction((p, ct) => Run(g, p, () =>
        {
            if (p.GetValue(preset) != "tiny")
            {
                return Output.Invalid($"--preset: expected tiny, got \"{p.GetValue(preset)}\"");
            }
            using var pipe = KnownConfigs.Tiny(p.GetValue(iSeed));
            pipe.Save(p.GetValue(iOut)!, p.GetValue(fp16));
            AnsiConsole.WriteLine($"wrote a random tiny pipeline to {p.GetValue(iOut)!}");
            return ExitCodes.Ok;
        }));

        var tOutDir = new Option<string>("--out") { Description = "The pipeline folder to write", Required = true };
        var tScorer = new Option<string?>("--scorer") { Description = "Also train the toy scorer CNN and write it here (an existing scorer there is reused), and report the fidelity with guidance 3" };
        var tSteps = new Option<int>("--steps") { Description = "Denoiser training steps", DefaultValueFactory = _ => 2000 };
        var tScorerSteps = new Option<int>("--scorer-steps") { Description = "Scorer training steps", DefaultValueFactory = _ => 1500 };
        var tSize = new Option<int>("--size") { Description = "Image side: 16 or 32", DefaultValueFactory = _ => 16 };
        var tSeed = new Option<long>("--seed") { Description = "Seed", DefaultValueFactory = _ => 0 };
        var trainToy = new Command("train-toy", "Train the toy world's text-to-image model (and optionally its scorer); the workflow activity is diffusion.train-toy") { tOutDir, tScorer, tSteps, tScorerSteps, tSize, tSeed };
        trainToy.SetAction((p, ct) => Run(g, p, () =>
        {
            if (p.GetValue(tSize) is not (16 or 32) || p.GetValue(tSteps) is < 1 or > 1_000_000)
            {
                return Output.Invalid("--size: expected 16 or 32; --steps: expected 1 to 1000000");
            }
            var started = DateTime.UtcNow;
            var world = new Pipelines.Models.Diffusion.Toy.ToyWorld(p.GetValue(tSize));
            if (p.GetValue(tScorer) is { } scorerDir && !File.Exists(Path.Combine(scorerDir, "config.json")))
            {
                using var scorer = Pipelines.Models.Diffusion.Toy.ToyScorer.Train(world, p.GetValue(tScorerSteps), p.GetValue(tSeed), (s, l) => Console.Error.Write($"\rscorer step {s}, loss {l:F4}   "), ct);
                Console.Error.WriteLine();
                scorer.Save(scorerDir);
                var acc = scorer.Evaluate(world);
                AnsiConsole.WriteLine($"scorer: shape {acc.Shape:P1}, colour {acc.Colour:P1}, size r {acc.SizeCorrelation:F3} on {acc.Images} clean images ({(DateTime.UtcNow - started).TotalSeconds:F0} s)");
            }
            var (pipe, losses) = Pipelines.Models.Diffusion.Toy.ToyDiffusionTrainer.Train(new Pipelines.Models.Diffusion.Toy.ToyDiffusionOptions { Size = p.GetValue(tSize), Steps = p.GetValue(tSteps), Seed = p.GetValue(tSeed) },
                (s, l) => Console.Error.Write($"\rdenoiser step {s}, loss {l:F4} ({(DateTime.UtcNow - started).TotalSeconds:F0} s)   "), ct);
            Console.Error.WriteLine();
            using (pipe)
            {
                pipe.Save(p.GetValue(tOutDir)!);
                if (p.GetValue(tScorer) is { } sd)
                {
                    using var scorer = Pipelines.Models.Diffusion.Toy.ToyScorer.Load(sd);
                    var f = Pipelines.Models.Diffusion.Toy.ToyDiffusionTrainer.Fidelity(pipe, scorer, 3.0, 20, 4, 7);
                    AnsiConsole.WriteLine($"fidelity with guidance 3 (20 DDIM steps, 4 per prompt): shape {f.Shape:P1}, colour {f.Colour:P1}");
                }
            }
            AnsiConsole.WriteLine($"final loss {losses[^1].Loss:F4}; wrote {p.GetValue(tOutDir)} in {(DateTime.UtcNow - started).TotalSeconds:F0} s");
            return ExitCodes.Ok;
        }));

        return new Command("diffusion", "Load, inspect and sample diffusers pipeline folders (Stable Diffusion 1.x/2.x layout, toy models)") { info, sample, eps, encode, decode, init, trainToy };
    }

    private static long Count(TorchSharp.torch.nn.Module m) => m.parameters().Sum(x => x.numel());

    /// <summary>Named floating-point or integer tensors from a safetensors file; a missing one fails naming the file and tensor.</summary>
    private static Dictionary<string, Tensor> ReadTensors(string path, params string[] names)
    {
        using var file = SafetensorsFile.Open(path);
        var result = new Dictionary<string, Tensor>();
        foreach (var name in names)
        {
            if (!file.Entries.ContainsKey(name))
            {
                throw new CheckpointException($"{path}: no tensor \"{name}\" (expected {string.Join(", ", names)})");
            }
            var t = file.Read(name);
            if (t.dtype is ScalarType.Bool)
            {
                throw new CheckpointException($"{path}: tensor \"{name}\" is boolean; expected numbers");
            }
            if (t.is_floating_point() && !t.to(ScalarType.Float32).isfinite().all().item<bool>())
            {
                throw new CheckpointException($"{path}: tensor \"{name}\" holds NaN or infinite values");
            }
            result[name] = t;
        }
        return result;
    }

    private static Task<int> Run(GlobalOptions g, ParseResult p, Func<int> body) => ModelCommands.Run(g, p, body);
}
