using System.Text.Json.Nodes;
using Pipelines.Engine.Planning;

namespace Pipelines.Engine.Tests;

public sealed class CanonicalJsonTests
{
    [Theory]
    [InlineData("{\"b\":1,\"a\":[1,2,{\"d\":true,\"c\":null}]}", "{\"a\":[1,2,{\"c\":null,\"d\":true}],\"b\":1}")]
    [InlineData("1.0", "1")]
    [InlineData("1e2", "100")]
    [InlineData("0.1", "0.1")]
    [InlineData("-2.50", "-2.5")]
    [InlineData("\"é\\u0041\"", "\"éA\"")]
    public void SerializesToOneCanonicalForm(string input, string expected) =>
        Assert.Equal(expected, CanonicalJson.Serialize(JsonNode.Parse(input)));

    [Fact]
    public void KeyMaterialDiffNamesWhatChanged()
    {
        var env = new JsonObject { ["engine"] = "0.1" };
        var a = new KeyMaterial("data.sample", 1, new JsonObject { ["count"] = 10, ["seed"] = 0 }, new JsonObject { ["dataset"] = "aaa" }, new JsonObject(), env);
        var b = new KeyMaterial("data.sample", 1, new JsonObject { ["count"] = 10, ["seed"] = 3 }, new JsonObject { ["dataset"] = "bbb" }, new JsonObject(), env);
        Assert.NotEqual(a.Key, b.Key);
        Assert.Equal(["input \"seed\": 0 -> 3", "input artifact \"dataset\": \"aaa\" -> \"bbb\""], b.Diff(a));
        Assert.Equal(a.Key, KeyMaterial.FromJson(a.ToJson()).Key);
        Assert.Equal(64, a.Key.Length);
    }
}
