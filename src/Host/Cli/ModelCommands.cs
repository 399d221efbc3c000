using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Generation;
using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using Spectre.Console;
using static TorchSharp.torch;

namespace Pipelines.Host.Cli;

/// <summary><c>pipelines model info | logits | generate</c>.</summary>
public static class ModelCommands
{
    public static Command Model(GlobalOptions g)
    {
        var dirArg = new Argument<string>("dir") { Description = "A HF checkpoint directory" };
        var info = new Command("info", "Architecture, parameter count, dtype and tokenizer of a checkpoint") { dirArg };
        info.SetAction((p, ct) => Run(g, p, () =>
        {
            var dir = p.GetValue(dirArg)!;
            var config = HfConfig.Read(Path.Combine(dir, Checkpoint.ConfigFile));
            using var weights = Checkpoint.OpenWeights(dir);
            var dtypes = weights.Names.Select(n => weights.DType(n)).GroupBy(d => d).Select(x => $"{x.Key} ×{x.Count()}");
            var tokenizer = TokenizerLoader.FromDirectory(dir, config.BosTokenId, config.EosTokenId, config.PadTokenId);
            var table = new Table().HideHeaders().AddColumns("", "");
            table.AddRow("architecture", config.Architecture);
            table.AddRow("layers × heads", $"{config.NLayers} × {config.NHeads} (kv heads {config.KvHeads}, d_head {config.HeadDim})");
            table.AddRow("d_model / d_mlp / vocab", $"{config.DModel} / {config.DMlp} / {config.DVocab}");
            table.AddRow("parameters", $"{config.ParameterCount():N0}");
            table.AddRow("norm / positions / MLP", $"{config.Norm} / {config.Positional}{(config.Positional == PositionalKind.Rotary ? $" (dims {config.RotaryDims}, base {config.RotaryBase})" : "")} / {config.Act}{(config.GatedMlp ? " gated" : "")}{(config.ParallelAttnMlp ? ", parallel attn+MLP" : "")}");
            table.AddRow("stored dtypes", string.Join(", ", dtypes) + " (computed in float32)");
            table.AddRow("tensors", $"{weights.Names.Count}");
            table.AddRow("tokenizer", tokenizer is null ? "none" : $"{tokenizer.Kind} (bos {tokenizer.BosId?.ToString() ?? "—"}, eos {tokenizer.EosId?.ToString() ?? "—"})");
            AnsiConsole.Write(table);
            return ExitCodes.Ok;
        }));

        var model = new Option<string>("--model") { Description = "A HF checkpoint directory", Required = true };
        var tokens = new Option<string>("--tokens") { Description = "Token ids, comma-separated: 1,2,3", Required = true };
        var output = new Option<string>("--out") { Description = "Write {\"logits\": [[...], ...]} here", Required = true };
        var logits = new Command("logits", "Write the float32 logits of one token sequence, one row per position, to compare with another implementation") { model, tokens, output };
        logits.SetAction((p, ct) => Run(g, p, () =>
        {
            long[] ids;
            try
            {
                ids = p.GetValue(tokens)!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries).Select(long.Parse).ToArray();
            }
            catch (FormatException)
            {
                return Output.Invalid($"--tokens: expected comma-separated integers, got \"{p.GetValue(tokens)}\"");
            }
            using var m = Checkpoint.Load(p.GetValue(model)!);
            if (ids.Length == 0 || ids.Any(i => i < 0 || i >= m.Config.DVocab))
            {
                return Output.Invalid($"--tokens: expected 1 or more ids in [0, {m.Config.DVocab})");
            }
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var result = m.Forward(tensor(ids).unsqueeze(0))[0].to(ScalarType.Float32);
            var rows = new JsonArray();
            for (var t = 0; t < ids.Length; t++)
            {
                rows.Add(new JsonArray(result[t].data<float>().ToArray().Select(v => (JsonNode?)v).ToArray()));
            }
            File.WriteAllText(p.GetValue(output)!, new JsonObject { ["logits"] = rows }.ToJsonString());
            AnsiConsole.MarkupLine($"wrote {ids.Length} × {m.Config.DVocab} logits to {Markup.Escape(p.GetValue(output)!)}");
            return ExitCodes.Ok;
        }));

        var genModel = new Option<string>("--model") { Description = "A HF checkpoint directory", Required = true };
        var prompt = new Option<string>("--prompt") { Description = "The prompt (with --chat: the user message)", Required = true };
        var prefill = new Option<string?>("--prefill") { Description = "Text the answer starts with; generation continues it" };
        var chat = new Option<string?>("--chat") { Description = "Wrap the prompt in a chat template: llama3, llama2, qwen2, plain (default: none)" };
        var max = new Option<int?>("--max-tokens") { Description = "New tokens at most (default: 32, or as many as fit in the model's context)" };
        var temperature = new Option<double>("--temperature") { Description = "0 is greedy", DefaultValueFactory = _ => 0 };
        var topK = new Option<int>("--top-k") { Description = "Sample from the k most likely (0: all)" };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling mass", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<long>("--seed") { Description = "Sampling seed" };
        var stop = new Option<string[]>("--stop") { Description = "Stop sequence (repeatable)", Arity = ArgumentArity.ZeroOrMore };
        var generate = new Command("generate", "Continue a prompt (optionally in a chat template with an assistant prefill)") { genModel, prompt, prefill, chat, max, temperature, topK, topP, seed, stop };
        generate.SetAction((p, ct) => Run(g, p, () =>
        {
            var dir = p.GetValue(genModel)!;
            using var m = Checkpoint.Load(dir);
            var tokenizer = TokenizerLoader.FromDirectory(dir, m.Config.BosTokenId, m.Config.EosTokenId, m.Config.PadTokenId)
                ?? TokenizerLoader.Gpt2ReferenceFor(m.Config);
            if (tokenizer is null)
            {
                return Output.Invalid($"{dir}: no tokenizer.json or tokenizer.model");
            }
            var text = p.GetValue(chat) is { } family
                ? ChatTemplates.Format(family, [new ChatMessage("user", p.GetValue(prompt)!)], p.GetValue(prefill))
                : p.GetValue(prompt)! + (p.GetValue(prefill) is { Length: > 0 } pre ? " " + pre : "");
            var generator = new TextGenerator(m, tokenizer);
            if (Pipelines.Activities.Model.VocabularyCheck.UnknownWords(tokenizer, [text]) is { Count: > 0 } unknown)
            {
                return Output.Invalid($"the prompt has words outside this model's vocabulary: {string.Join(", ", unknown)}");
            }
            var room = generator.Room(text);
            if (room is <= 0)
            {
                return Output.Invalid($"the prompt fills the model's context ({m.Config.NCtx} positions); shorten it");
            }
            var wanted = p.GetValue(max) ?? Math.Min(32, room ?? 32);
            if (wanted < 1 || wanted > room)
            {
                return Output.Invalid(wanted < 1 ? "--max-tokens: expected at least 1" : $"--max-tokens: at most {room} new tokens fit after this prompt in the model's context of {m.Config.NCtx} positions");
            }
            var options = new GenerationOptions
            {
                MaxNewTokens = wanted, Temperature = p.GetValue(temperature), TopK = p.GetValue(topK), TopP = p.GetValue(topP),
                Seed = p.GetValue(seed), StopSequences = p.GetValue(stop) ?? [],
            };
            var result = generator.Generate([text], options)[0];
            AnsiConsole.MarkupLine($"[grey]{Markup.Escape(text)}[/][bold]{Markup.Escape((tokenizer.Kind == "wordlevel" ? " " : "") + result.Text)}[/]");
            AnsiConsole.MarkupLine($"[grey]({result.Tokens.Count} tokens, {result.StopReason})[/]");
            return ExitCodes.Ok;
        }));
        var task = new Option<string>("--task") { Description = "ioi or greater-than", DefaultValueFactory = _ => "ioi" };
        var steps = new Option<int>("--steps") { Description = "Training steps", DefaultValueFactory = _ => 800 };
        var every = new Option<int>("--checkpoint-every") { Description = "Write DIR/step-NNNNNN every this many steps", DefaultValueFactory = _ => 100 };
        var trainSeed = new Option<long>("--seed") { Description = "Training seed" };
        var outDir = new Option<string>("--out") { Description = "Where the checkpoints (step-NNNNNN) and the final model (final/) go", Required = true };
        var train = new Command("train-toy", "Train a toy model, writing intermediate checkpoints as it goes (what a checkpoint watcher watches)") { task, steps, every, trainSeed, outDir };
        train.SetAction((p, ct) => Run(g, p, () =>
        {
            var dir = Path.GetFullPath(p.GetValue(outDir)!);
            var result = Pipelines.Models.Training.ToyTrainer.Train(new Pipelines.Models.Training.ToyTrainingOptions
            {
                Task = p.GetValue(task)!, Steps = p.GetValue(steps), CheckpointEvery = p.GetValue(every), Seed = p.GetValue(trainSeed),
            }, Path.Combine(dir, "final"), dir, (step, loss) =>
            {
                if (step % 50 == 0)
                {
                    AnsiConsole.MarkupLine($"[grey]step {step}: loss {loss:F4}[/]");
                }
            }, ct);
            AnsiConsole.MarkupLine($"accuracy {result.Score.Accuracy:P1} · {result.Checkpoints.Count} checkpoints in {Markup.Escape(dir)}");
            return ExitCodes.Ok;
        }));
        return new Command("model", "Inspect checkpoints, dump logits, generate text, train a toy model") { info, logits, generate, train };
    }

    /// <summary>Runs a runtime command: checkpoint, argument and I/O problems become one line and exit code 2.</summary>
    internal static Task<int> Run(GlobalOptions g, ParseResult p, Func<int> body) => g.Execute(p, _ =>
    {
        try
        {
            TorchRuntime.EnsureLoaded();
            return Task.FromResult(body());
        }
        catch (CheckpointException e)
        {
            return Task.FromResult(Output.Invalid(e.Message));
        }
        catch (ArgumentException e)
        {
            // Token ids outside the vocabulary, inputs beyond the context: the runtime's one-line refusals.
            return Task.FromResult(Output.Invalid(e.Message.Split('\n')[0]));
        }
        catch (IOException e)
        {
            return Task.FromResult(Output.Invalid(e.Message.Split('\n')[0]));
        }
        catch (TorchUnavailableException e)
        {
            Output.Error.MarkupLine($"[red bold]error:[/] {Markup.Escape(e.Message)}");
            return Task.FromResult(ExitCodes.Failed);
        }
    });
}
