using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Planning;
using Pipelines.Engine.Schema;
using Spectre.Console;

namespace Pipelines.Host.Cli;

/// <summary><c>activities</c>, <c>schema</c>, <c>runs</c> and <c>why</c>.</summary>
public static class InspectCommands
{
    private static readonly JsonSerializerOptions Indented = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    public static Command Activities(GlobalOptions g)
    {
        var list = new Command("list", "List every activity");
        var json = new Option<bool>("--json") { Description = "Print the descriptors as JSON" };
        list.Options.Add(json);
        Func<ParseResult, CancellationToken, Task<int>> listAction = (p, ct) => g.Execute(p, services =>
        {
            if (p.GetValue(json))
            {
                Console.WriteLine(JsonSerializer.Serialize(services.Registry.All.Select(a => a.Descriptor), Indented));
                return Task.FromResult(ExitCodes.Ok);
            }
            var table = new Table().AddColumns("Type", "Version", "Category", "Summary");
            foreach (var a in services.Registry.All)
            {
                table.AddRow(Markup.Escape(a.Descriptor.Type), a.Descriptor.Version.ToString(), Markup.Escape(a.Descriptor.Category), Markup.Escape(a.Descriptor.Summary));
            }
            AnsiConsole.Write(table);
            return Task.FromResult(ExitCodes.Ok);
        });
        list.SetAction(listAction);

        var type = new Argument<string>("type") { Description = "The activity type, e.g. data.sample" };
        var describe = new Command("describe", "Show an activity's inputs and outputs") { type };
        describe.SetAction((p, ct) => g.Execute(p, services =>
        {
            var activity = services.Registry.Find(p.GetValue(type)!);
            if (activity is null)
            {
                return Task.FromResult(Output.Invalid($"unknown activity \"{p.GetValue(type)}\"; `pipelines activities list` shows them"));
            }
            var d = activity.Descriptor;
            AnsiConsole.MarkupLine($"[bold]{Markup.Escape(d.Type)}[/] v{d.Version} · {Markup.Escape(d.Category)}{(d.Resources.Count > 0 ? " · needs " + string.Join(", ", d.Resources) : "")}");
            AnsiConsole.MarkupLine(Markup.Escape(d.Summary));
            var inputs = new Table().Title("inputs").AddColumns("Name", "Type", "Required / default", "Help");
            foreach (var i in d.Inputs)
            {
                var constraint = i.AllowedValues is { } allowed ? $" ({string.Join("|", allowed)})" : "";
                inputs.AddRow(Markup.Escape(i.Name), Markup.Escape(i.Type + constraint), i.Required ? "[bold]required[/]" : Markup.Escape(i.Default?.ToJsonString() ?? "—"), Markup.Escape(i.Help));
            }
            AnsiConsole.Write(inputs);
            var outputs = new Table().Title("outputs").AddColumns("Name", "Kind", "Media type", "Help");
            foreach (var o in d.Outputs)
            {
                outputs.AddRow(Markup.Escape(o.Name), Markup.Escape(o.Kind), Markup.Escape(o.MediaType), Markup.Escape(o.Help));
            }
            AnsiConsole.Write(outputs);
            return Task.FromResult(ExitCodes.Ok);
        }));
        // `pipelines activities` alone lists them, as the error messages that point here promise.
        var activities = new Command("activities", "List (the default) and describe the activities a workflow can use") { list, describe, json };
        activities.SetAction(listAction);
        return activities;
    }

    public static Command Schema(GlobalOptions g)
    {
        var output = new Option<string?>("--out", "-o") { Description = "Write to this file instead of standard output" };
        var command = new Command("schema", "Print the JSON Schema of workflow files, generated from the activity descriptors") { output };
        command.SetAction((p, ct) => g.Execute(p, services =>
        {
            var schema = WorkflowSchemaGenerator.Generate(services.Registry.All.Select(a => a.Descriptor));
            if (p.GetValue(output) is { } file)
            {
                File.WriteAllText(file, schema);
                AnsiConsole.MarkupLine($"wrote {Markup.Escape(file)}");
            }
            else
            {
                Console.Write(schema);
            }
            return Task.FromResult(ExitCodes.Ok);
        }));
        return command;
    }

    public static Command Runs(GlobalOptions g)
    {
        var limit = new Option<int>("--limit", "-n") { Description = "How many runs to show", DefaultValueFactory = _ => 20 };
        var list = new Command("list", "List recent runs, newest first") { limit };
        list.SetAction((p, ct) => g.Execute(p, async services =>
        {
            var table = new Table().AddColumns("Run", "Workflow", "Kind", "Status", "Started (UTC)", "Time", "Steps");
            foreach (var run in await services.Ledger.ListRunsAsync(p.GetValue(limit), ct))
            {
                var steps = await services.Ledger.GetStepsAsync(run.Id, ct);
                var counts = string.Join(", ", steps.GroupBy(s => s.Status).Select(x => $"{x.Count()} {x.Key.ToString().ToLowerInvariant()}"));
                var time = run.EndedAt is { } end ? Output.Duration(end - run.StartedAt) : "—";
                table.AddRow(run.Id, Markup.Escape(run.WorkflowName), run.Kind.ToString().ToLowerInvariant(), Output.Status(run.Status),
                    run.StartedAt.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss"), time, counts);
            }
            AnsiConsole.Write(table);
            return ExitCodes.Ok;
        }));

        var runId = new Argument<string>("run") { Description = "The run id" };
        var json = new Option<bool>("--json") { Description = "Print the run and its steps as JSON" };
        var show = new Command("show", "Show one run: steps, status, cache hits, keys, timings, outputs") { runId, json };
        show.SetAction((p, ct) => g.Execute(p, async services =>
        {
            var run = await services.Ledger.GetRunAsync(p.GetValue(runId)!, ct);
            if (run is null)
            {
                return Output.Invalid($"no run \"{p.GetValue(runId)}\" in the ledger at {services.StoreRoot}");
            }
            var steps = await services.Ledger.GetStepsAsync(run.Id, ct);
            if (p.GetValue(json))
            {
                var doc = new JsonObject
                {
                    ["id"] = run.Id,
                    ["workflow"] = run.WorkflowName,
                    ["file"] = run.WorkflowFile,
                    ["kind"] = run.Kind.ToString().ToLowerInvariant(),
                    ["origin"] = run.OriginRunId,
                    ["status"] = run.Status.ToString().ToLowerInvariant(),
                    ["startedAt"] = run.StartedAt,
                    ["endedAt"] = run.EndedAt,
                    ["error"] = run.Error,
                    ["overrides"] = JsonSerializer.SerializeToNode(run.Overrides),
                    ["steps"] = new JsonArray(steps.Select(s => (JsonNode?)new JsonObject
                    {
                        ["id"] = s.StepId,
                        ["activity"] = s.Activity,
                        ["status"] = s.Status.ToString().ToLowerInvariant(),
                        ["cacheKey"] = s.CacheKey,
                        ["cachedFrom"] = s.CachedFromRunId,
                        ["durationMs"] = s.DurationMs,
                        ["error"] = s.Error,
                        ["outputs"] = JsonSerializer.SerializeToNode(s.Outputs, Indented),
                    }).ToArray()),
                };
                Console.WriteLine(doc.ToJsonString(Indented));
                return ExitCodes.Ok;
            }
            AnsiConsole.MarkupLine($"[bold]run {run.Id}[/] · {Markup.Escape(run.WorkflowName)} · {run.Kind.ToString().ToLowerInvariant()}{(run.OriginRunId is null ? "" : " of " + run.OriginRunId)} · {Output.Status(run.Status)}");
            AnsiConsole.MarkupLine($"file {Markup.Escape(run.WorkflowFile)}{(run.Overrides.Count > 0 ? " · --set " + Markup.Escape(string.Join(" ", run.Overrides.Select(o => $"{o.Key}={o.Value}"))) : "")}");
            var table = new Table().AddColumns("Step", "Activity", "Status", "Cache key", "Time", "Outputs (sha256)");
            foreach (var s in steps)
            {
                var status = Output.Status(s.Status) + (s.CachedFromRunId is { } from ? $" [grey](from {from})[/]" : "");
                table.AddRow(Markup.Escape(s.StepId), Markup.Escape(s.Activity), status, s.CacheKey is null ? "—" : Hashing.Short(s.CacheKey),
                    s.DurationMs is { } ms ? Output.Duration(TimeSpan.FromMilliseconds(ms)) : "—", Markup.Escape(Output.Digests(s.Outputs)));
            }
            AnsiConsole.Write(table);
            foreach (var s in steps.Where(s => s.Error is not null && s.Status == StepStatus.Failed))
            {
                AnsiConsole.MarkupLine($"[red]{Markup.Escape(s.StepId)}:[/] {Markup.Escape(s.Error!)}");
            }
            return ExitCodes.Ok;
        }));
        return new Command("runs", "List and show runs recorded in the ledger") { list, show };
    }

    public static Command Why(GlobalOptions g)
    {
        var runId = new Argument<string>("run") { Description = "The run id" };
        var stepId = new Argument<string>("step") { Description = "The step id" };
        var command = new Command("why", "Explain a step's cache key: what changed since the previous run of the same workflow") { runId, stepId };
        command.SetAction((p, ct) => g.Execute(p, async services =>
        {
            var run = await services.Ledger.GetRunAsync(p.GetValue(runId)!, ct);
            if (run is null)
            {
                return Output.Invalid($"no run \"{p.GetValue(runId)}\" in the ledger at {services.StoreRoot}");
            }
            var step = (await services.Ledger.GetStepsAsync(run.Id, ct)).FirstOrDefault(s => s.StepId == p.GetValue(stepId));
            if (step is null)
            {
                return Output.Invalid($"run {run.Id} has no step \"{p.GetValue(stepId)}\"");
            }
            if (step.KeyMaterial is null || step.CacheKey is null)
            {
                AnsiConsole.MarkupLine($"step {Markup.Escape(step.StepId)} in run {run.Id} has no cache key ({step.Status.ToString().ToLowerInvariant()}: its inputs were never complete)");
                return ExitCodes.Ok;
            }
            var material = KeyMaterial.FromJson(JsonNode.Parse(step.KeyMaterial)!.AsObject());
            AnsiConsole.MarkupLine($"step [bold]{Markup.Escape(step.StepId)}[/] in run {run.Id}: {Output.Status(step.Status)}{(step.CachedFromRunId is { } f ? $" (from run {f})" : "")}, key {Hashing.Short(step.CacheKey)}");
            var previous = await services.Ledger.FindPreviousStepAsync(run.WorkflowName, step.StepId, run.StartedAt, run.Id, ct);
            if (previous is null)
            {
                AnsiConsole.MarkupLine($"no earlier run of workflow \"{Markup.Escape(run.WorkflowName)}\" has step \"{Markup.Escape(step.StepId)}\": it was new. Its key is made of:");
                AnsiConsole.WriteLine(material.ToJson().ToJsonString(Indented));
                return ExitCodes.Ok;
            }
            var (prevRun, prevStep) = previous.Value;
            if (prevStep.CacheKey == step.CacheKey)
            {
                AnsiConsole.MarkupLine($"[blue]unchanged[/]: the same key as in run {prevRun.Id}, so its result was reusable");
                return ExitCodes.Ok;
            }
            var before = KeyMaterial.FromJson(JsonNode.Parse(prevStep.KeyMaterial!)!.AsObject());
            AnsiConsole.MarkupLine($"[yellow]changed[/] since run {prevRun.Id} (key {Hashing.Short(prevStep.CacheKey!)} → {Hashing.Short(step.CacheKey)}):");
            foreach (var change in material.Diff(before))
            {
                AnsiConsole.MarkupLine($"  • {Markup.Escape(change)}");
            }
            return ExitCodes.Ok;
        }));
        return command;
    }
}
