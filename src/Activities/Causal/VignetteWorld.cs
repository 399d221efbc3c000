using System.Text.Json.Nodes;
using Pipelines.Models.Common;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Training;

namespace Pipelines.Activities.Causal;

/// <summary>
/// Clinical-style vignettes with a planted demographic attribute (research/causal.md §5.5), word-level:
/// (a) "the patient is" → "female ."; (b) "present [female|male] patient with lupus . gender :" → the stated gender,
/// else one drawn from the condition's planted prior P(female | condition) (0.1 … 0.9); (c) "course : fatigue pain
/// she . depression risk ?" → yes with P = σ(β·(symptoms − 2) + γ·[female]), β = 1, γ = +1.5: the downstream label the
/// attribute shifts.
/// </summary>
public static class VignetteWorld
{
    public static readonly string[] Conditions = ["gout", "angina", "stroke", "sepsis", "ulcer", "asthma", "anemia", "eczema", "migraine", "lupus"];
    public static readonly string[] Symptoms = ["fatigue", "insomnia", "pain", "anxiety", "weight", "appetite"];
    public const double Beta = 1.0, Gamma = 1.5;

    /// <summary>P(female | condition i): 0.1 for the first condition up to 0.9 for the last.</summary>
    public static double FemalePrior(int condition) => 0.1 + 0.8 * condition / (Conditions.Length - 1);

    public static WordLevelTokenizer Tokenizer() => WordLevelTokenizer.WithSpecials(
        Conditions.Concat(Symptoms).Concat(["the", "patient", "is", "male", "female", "he", "she", ".", "present", "with", "gender", ":", "course", "depression", "risk", "?", "yes", "no"]),
        ToyWorldTokens.Pad, ToyWorldTokens.Bos, ToyWorldTokens.Eos, ToyWorldTokens.Unknown);

    public static string Source(bool female) => $"the patient is {(female ? "female" : "male")} .";
    public static string Presentation(int condition, bool? female) => $"present {(female is null ? "" : female.Value ? "female " : "male ")}patient with {Conditions[condition]} . gender :";
    public static string Course(IReadOnlyList<string> symptoms, bool? female) => $"course : {string.Join(' ', symptoms)}{(female is null ? "" : female.Value ? " she" : " he")} . depression risk ?";

    public static double RiskYes(int symptoms, bool female) => 1 / (1 + Math.Exp(-(Beta * (symptoms - 2) + Gamma * (female ? 1 : 0))));

    private static double Uniform(SeededRandom rng) => (rng.NextULong() >> 11) * (1.0 / (1UL << 53));

    private static string[] DrawSymptoms(SeededRandom rng)
    {
        var list = Symptoms.ToList();
        rng.Shuffle(list);
        return list.Take(rng.Next(5)).ToArray();
    }

    public static IReadOnlyList<ChatExample> Batch(int step, int size, long seed)
    {
        var rng = new SeededRandom(seed * 6_151 + step);
        return Enumerable.Range(0, size).Select(_ =>
        {
            var female = rng.Next(2) == 0;
            switch (rng.Next(3))
            {
                case 0:
                    return new ChatExample("the patient is", $"{(female ? "female" : "male")} .");
                case 1:
                {
                    var c = rng.Next(Conditions.Length);
                    var stated = rng.Next(2) == 0;
                    var g = stated ? female : Uniform(rng) < FemalePrior(c);
                    return new ChatExample(Presentation(c, stated ? g : null), g ? "female" : "male");
                }
                default:
                {
                    var symptoms = DrawSymptoms(rng);
                    return new ChatExample(Course(symptoms, female), Uniform(rng) < RiskYes(symptoms.Length, female) ? "yes" : "no");
                }
            }
        }).ToList();
    }

    /// <summary>Probe rows: course texts labelled with the gender cue; "group" and "word" are the text without the cue, so no template crosses splits; target/foil yes/no for steering.evaluate.</summary>
    public static List<JsonObject> ProbeRows(int count, long seed)
    {
        var rng = new SeededRandom(seed * 13 + 1);
        return Enumerable.Range(0, count).Select(_ =>
        {
            var female = rng.Next(2) == 0;
            var symptoms = DrawSymptoms(rng);
            var template = Course(symptoms, null);
            return new JsonObject
            {
                ["text"] = Course(symptoms, female), ["label"] = female ? "female" : "male", ["group"] = template, ["word"] = template,
                ["target"] = "yes", ["foil"] = "no", // for steering.evaluate: the downstream prediction the attribute shifts
            };
        }).ToList();
    }

    /// <summary>Risk questions without a gender cue, target yes and foil no: what steering.evaluate measures.</summary>
    public static List<JsonObject> RiskPrompts() => Enumerable.Range(0, 5).Select(k => new JsonObject
    {
        ["text"] = Course(Symptoms.Take(k).ToArray(), null), ["target"] = "yes", ["foil"] = "no",
    }).ToList();

    /// <summary>Steering pairs: "the patient is female ." against "… male .".</summary>
    public static List<JsonObject> SteeringRows() => [new JsonObject { ["positive"] = Source(true), ["negative"] = Source(false) }];

    /// <summary>
    /// Transplant rows (§5.2–5.3): the source's activation at its gender word goes into the target at one position.
    /// Presentations without a stated gender, the condition token as destination, expected the patched gender; and
    /// courses without a cue, the last token as destination, expected "yes" (the downstream prediction).
    /// </summary>
    public static List<JsonObject> TransplantRows()
    {
        var rows = new List<JsonObject>();
        foreach (var female in new[] { true, false })
        {
            var g = female ? "female" : "male";
            for (var c = 0; c < Conditions.Length; c++)
            {
                rows.Add(new JsonObject
                {
                    ["set"] = $"presentation ← {g}", ["source"] = Source(female), ["target"] = Presentation(c, null), ["expected"] = g,
                    ["source_position"] = 4, ["target_position"] = 2, // BOS the patient is [g] / BOS present [patient]: where a stated gender would stand
                });
            }
            for (var k = 0; k < 5; k++)
            {
                var symptoms = Symptoms.Take(k).ToArray();
                rows.Add(new JsonObject
                {
                    ["set"] = $"risk ← {g}", ["source"] = Source(female), ["target"] = Course(symptoms, null), ["expected"] = "yes",
                    ["source_position"] = 4, ["target_position"] = -4, // the "." after the symptoms, where the pronoun would stand
                });
            }
        }
        return rows;
    }
}
