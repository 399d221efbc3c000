using System.Reflection;
using System.Reflection.Emit;
using Pipelines.Models.Runtime;
using Pipelines.Tests.Workflow;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Tests.Models;

/// <summary>
/// TorchSharp members that make a temporary native Scalar are banned at compile time (build/BannedSymbols.txt, RS0030):
/// the GC may finalize such a Scalar while libtorch still reads it. The list must be exactly what TorchSharp's IL says,
/// so a TorchSharp upgrade that adds one fails here; and the replacements in <see cref="Scalars"/> must compute the same
/// bits as the operators they replace, so the ban changed no result.
/// </summary>
public sealed class ScalarLifetimeTests
{
    static ScalarLifetimeTests() => TorchRuntime.EnsureLoaded();

    [Fact]
    public void TheBanListIsEveryTorchSharpMemberThatMakesATemporaryScalar()
    {
        var scanned = ScalarMakingMembers();
        var banned = File.ReadAllLines(Path.Combine(SchemaTests.RepoRoot(), "build", "BannedSymbols.txt"))
            .Where(l => l.StartsWith("M:", StringComparison.Ordinal)).Select(l => l.Split(';')[0]).ToHashSet();
        // The scan finds the members everyone reaches for: a + b, add_(b), square(), arange(n), x * 0.5, AdamW.step.
        Assert.Contains("M:TorchSharp.torch.Tensor.op_Addition(TorchSharp.torch.Tensor,TorchSharp.torch.Tensor)", scanned);
        Assert.Contains("M:TorchSharp.torch.Tensor.add_(TorchSharp.torch.Tensor)", scanned);
        Assert.Contains("M:TorchSharp.torch.Tensor.square", scanned);
        Assert.Contains("M:TorchSharp.torch.Tensor.op_Multiply(TorchSharp.torch.Tensor,System.Double)", scanned);
        Assert.Contains("M:TorchSharp.Modules.AdamW.step(System.Func{TorchSharp.torch.Tensor})", scanned);
        Assert.Contains("M:TorchSharp.Scalar.op_Implicit(System.Double)~TorchSharp.Scalar", scanned);
        // ... and not the ones that take the caller's Scalar and make none.
        Assert.DoesNotContain("M:TorchSharp.torch.Tensor.add(TorchSharp.torch.Tensor,TorchSharp.Scalar)", scanned);
        Assert.DoesNotContain("M:TorchSharp.torch.Tensor.mul(TorchSharp.Scalar)", scanned);
        var missing = scanned.Except(banned).Order().ToList();
        var stale = banned.Except(scanned).Order().ToList();
        Assert.True(missing.Count == 0 && stale.Count == 0,
            $"build/BannedSymbols.txt is out of date with TorchSharp's IL: missing {string.Join(", ", missing.Take(10))}; stale {string.Join(", ", stale.Take(10))}");
    }

#pragma warning disable RS0030 // the banned originals, called once each to compare bits
    [Fact]
    public void TheReplacementsComputeTheBitsOfTheOperatorsTheyReplace()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(7);
        var a = randn([5, 7], generator: g);
        var b = randn([5, 7], generator: g);
        var u = rand([5, 7], generator: g);
        Same(a + b, a.Plus(b));
        Same(a.clone().add_(b), a.clone().PlusInPlace(b));
        Same(a.add(Scalars.Of(0.25)), a.Plus(Scalars.Of(0.25)));
        Same(1 - u, u.OneMinus());
        Same(a.square(), a.Squared());
        Same(a * 0.37, a.Times(0.37));
        Same(a / 1.3, a.Over(1.3));
        Same(a - 0.8, a.Minus(0.8));
        Same(a + 2.5, a.Shift(2.5));
        Same(arange(9), Scalars.Range(9));
        Same(arange(9, ScalarType.Float32), Scalars.Range(9, ScalarType.Float32));
        Same(arange(2, 11, ScalarType.Float32), Scalars.Range(2, 11, ScalarType.Float32));
        var mask = zeros(4, dtype: ScalarType.Bool);
        Same(mask.clone().index_fill_(0, tensor(new long[] { 1, 3 }), true), mask.clone().index_fill_(0, tensor(new long[] { 1, 3 }), Scalars.Bool(true)));
    }
#pragma warning restore RS0030

    private static void Same(Tensor expected, Tensor actual)
    {
        Assert.Equal(expected.dtype, actual.dtype);
        Assert.Equal(expected.shape, actual.shape);
        Assert.True(expected.to(ScalarType.Float64).eq(actual.to(ScalarType.Float64)).all().item<bool>(), "the replacement differs from the operator");
    }

    /// <summary>
    /// Every public TorchSharp member whose IL makes a Scalar (an implicit conversion, a Scalar constructor or ToScalar),
    /// directly or through anything it calls or makes a delegate of (optimisers' steps are lambdas): the closure over the
    /// call graph, as documentation-comment ids (the ban list's format).
    /// </summary>
    private static HashSet<string> ScalarMakingMembers()
    {
        var asm = typeof(Scalar).Assembly;
        var opcodes = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static).Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        var callers = new Dictionary<MethodBase, List<MethodBase>>();
        var makers = new HashSet<MethodBase>();
        foreach (var type in asm.GetTypes())
        {
            foreach (var method in type.GetMethods(all).Cast<MethodBase>().Concat(type.GetConstructors(all)))
            {
                var il = method.GetMethodBody()?.GetILAsByteArray();
                if (il is null)
                {
                    continue;
                }
                for (var i = 0; i < il.Length;)
                {
                    var op = il[i] == 0xFE ? opcodes[(short)(0xFE00 | il[i + 1])] : opcodes[il[i]];
                    i += op.Size;
                    if (op == OpCodes.Call || op == OpCodes.Callvirt || op == OpCodes.Newobj || op == OpCodes.Ldftn || op == OpCodes.Ldvirtftn)
                    {
                        MethodBase? callee = null;
                        try
                        {
                            callee = method.Module.ResolveMethod(BitConverter.ToInt32(il, i),
                                method.DeclaringType!.IsGenericType ? method.DeclaringType.GetGenericArguments() : null,
                                method.IsGenericMethod ? method.GetGenericArguments() : null);
                        }
                        catch (Exception e) when (e is ArgumentException or TypeLoadException or IOException or BadImageFormatException)
                        {
                            // a member of an assembly that cannot be loaded here: not TorchSharp's, so not a Scalar maker
                        }
                        if (callee is not null)
                        {
                            if (callee.DeclaringType == typeof(Scalar) && (callee.Name == "op_Implicit" || callee.IsConstructor) || callee.Name == "ToScalar")
                            {
                                makers.Add(method);
                            }
                            var key = callee is MethodInfo { IsGenericMethod: true } generic ? generic.GetGenericMethodDefinition() : callee;
                            if (!callers.TryGetValue(key, out var list))
                            {
                                callers[key] = list = [];
                            }
                            list.Add(method);
                        }
                    }
                    i += op.OperandType switch
                    {
                        OperandType.InlineNone => 0,
                        OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                        OperandType.InlineVar => 2,
                        OperandType.InlineI8 or OperandType.InlineR => 8,
                        OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, i),
                        _ => 4,
                    };
                }
            }
        }
        var reached = new HashSet<MethodBase>(makers);
        var queue = new Queue<MethodBase>(makers);
        while (queue.TryDequeue(out var m))
        {
            if (m.DeclaringType == typeof(Scalar) || !callers.TryGetValue(m, out var list))
            {
                continue;
            }
            foreach (var caller in list.Where(reached.Add))
            {
                queue.Enqueue(caller);
            }
        }
        return reached.Where(m => m.IsPublic && (m.DeclaringType!.IsPublic || m.DeclaringType.IsNestedPublic)).Select(DocId).ToHashSet();
    }

    private static string DocId(MethodBase m)
    {
        var name = m.IsConstructor ? "#ctor" : m.Name;
        if (m is MethodInfo { IsGenericMethod: true } generic)
        {
            name += "``" + generic.GetGenericArguments().Length;
        }
        var ps = m.GetParameters();
        var id = "M:" + TypeId(m.DeclaringType!) + "." + name + (ps.Length > 0 ? "(" + string.Join(",", ps.Select(p => TypeId(p.ParameterType))) + ")" : "");
        return m.Name is "op_Implicit" or "op_Explicit" ? id + "~" + TypeId(((MethodInfo)m).ReturnType) : id;
    }

    private static string TypeId(Type t)
    {
        if (t.IsByRef)
        {
            return TypeId(t.GetElementType()!) + "@";
        }
        if (t.IsArray)
        {
            return TypeId(t.GetElementType()!) + "[]";
        }
        if (t.IsGenericParameter)
        {
            return (t.DeclaringMethod is null ? "`" : "``") + t.GenericParameterPosition;
        }
        var name = (t.IsGenericType ? t.GetGenericTypeDefinition().FullName! : t.FullName!).Replace('+', '.');
        return t.IsGenericType && !t.IsGenericTypeDefinition
            ? name[..name.IndexOf('`')] + "{" + string.Join(",", t.GetGenericArguments().Select(TypeId)) + "}"
            : name;
    }
}
