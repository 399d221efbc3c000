using System.Text.RegularExpressions;
using YamlDotNet.RepresentationModel;

namespace Pipelines.IntegrationTests;

/// <summary>
/// Docker does not run on these machines, so docker-compose.yml is checked by reading it: the services and their
/// health checks, every command parses with the real CLI, and every PIPELINES_* variable is one the host reads.
/// </summary>
public sealed class ComposeTests
{
    private static YamlMappingNode Load()
    {
        var yaml = new YamlStream();
        using var reader = new StreamReader(Path.Combine(RepoPaths.Root(), "docker-compose.yml"));
        yaml.Load(reader);
        return (YamlMappingNode)yaml.Documents[0].RootNode;
    }

    private static YamlMappingNode Map(YamlNode node, string key) => (YamlMappingNode)((YamlMappingNode)node).Children[new YamlScalarNode(key)];

    private static bool Has(YamlNode node, string key) => ((YamlMappingNode)node).Children.ContainsKey(new YamlScalarNode(key));

    private static IEnumerable<string> Strings(YamlNode node) => ((YamlSequenceNode)node).Children.Select(c => ((YamlScalarNode)c).Value!);

    /// <summary>The environment of a service with YAML merge keys (&lt;&lt;: *anchor) applied.</summary>
    private static Dictionary<string, string> Environment(YamlMappingNode service)
    {
        var result = new Dictionary<string, string>();
        if (!Has(service, "environment"))
        {
            return result;
        }
        void Add(YamlMappingNode map)
        {
            foreach (var (k, v) in map.Children)
            {
                var key = ((YamlScalarNode)k).Value!;
                if (key == "<<")
                {
                    Add((YamlMappingNode)v);
                }
                else
                {
                    result[key] = ((YamlScalarNode)v).Value ?? "";
                }
            }
        }
        Add(Map(service, "environment"));
        return result;
    }

    [Fact]
    public void ServicesHealthChecksCommandsAndVariablesMatchWhatTheHostReads()
    {
        var root = Load();
        var services = Map(root, "services");
        var names = services.Children.Keys.Select(k => ((YamlScalarNode)k).Value).ToList();
        Assert.Equal(["postgres", "host", "worker", "gpu-worker"], names);
        foreach (var (key, node) in services.Children)
        {
            Assert.True(Has(node, "healthcheck"), $"{key} has no health check");
        }
        Assert.Equal(["gpu"], Strings(Map(services, "gpu-worker")["profiles"]));
        Assert.Equal("cuda", ((YamlScalarNode)Map(Map(Map(services, "gpu-worker"), "build"), "args")["TORCH_BACKEND"]).Value);
        Assert.Equal("cpu", ((YamlScalarNode)Map(Map(Map(services, "host"), "build"), "args")["TORCH_BACKEND"]).Value);

        // Every variable named PIPELINES_* in the file is read somewhere in src/ (by exact name).
        var source = string.Join("\n", Directory.EnumerateFiles(Path.Combine(RepoPaths.Root(), "src"), "*.cs", SearchOption.AllDirectories).Select(File.ReadAllText));
        var root2 = Pipelines.Host.Program.BuildRoot();
        foreach (var name in new[] { "host", "worker", "gpu-worker" })
        {
            var service = Map(services, name);
            var env = Environment(service);
            Assert.StartsWith("Host=postgres;", env["PIPELINES_DATABASE"]); // the postgres service, by its compose name
            foreach (var variable in env.Keys.Where(k => k.StartsWith("PIPELINES_", StringComparison.Ordinal)))
            {
                Assert.Contains($"\"{variable}\"", source);
            }
            // Commands and health checks parse with the real command line.
            var command = Strings(service["command"]).ToArray();
            Assert.Empty(root2.Parse(command).Errors);
            var health = Strings(Map(service, "healthcheck")["test"]).ToArray();
            Assert.Equal(["CMD", "dotnet", "/app/pipelines.dll"], health[..3]);
            Assert.Empty(root2.Parse(health[3..]).Errors);
        }
        Assert.Equal(["serve", "--workers", "0"], Strings(Map(services, "host")["command"]));
        Assert.Contains("gpu", Strings(Map(services, "gpu-worker")["command"]).Last(c => !c.StartsWith('-') && c != "1"));
        var postgres = Environment(Map(services, "postgres"));
        var database = Environment(Map(services, "host"))["PIPELINES_DATABASE"];
        Assert.Contains($"Username={postgres["POSTGRES_USER"]};Password={postgres["POSTGRES_PASSWORD"]};Database={postgres["POSTGRES_DB"]}", database);
        // The host publishes its port on the Docker host's loopback only.
        Assert.Matches(new Regex(@"^127\.0\.0\.1:5080:5080$"), Strings(Map(services, "host")["ports"]).Single());
        Assert.Contains("TORCH_BACKEND", File.ReadAllText(Path.Combine(RepoPaths.Root(), "Dockerfile")));
    }
}
