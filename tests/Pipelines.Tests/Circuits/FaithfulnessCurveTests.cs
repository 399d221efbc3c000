using Pipelines.Activities.Circuits.Faithfulness;

namespace Pipelines.Tests.Circuits;

public sealed class FaithfulnessCurveTests
{
    [Fact]
    public void CprAndCmdMatchAHandComputationOnASmallCurve()
    {
        // x: 0, 0.25, 0.5, 1 with f = 0, 0.5, 1.5, 1.
        // CPR = 0.25·(0+0.5)/2 + 0.25·(0.5+1.5)/2 + 0.5·(1.5+1)/2 = 0.0625 + 0.25 + 0.625 = 0.9375
        // CMD = 0.25·(1+0.5)/2 + 0.25·(0.5+0.5)/2 + 0.5·(0.5+0)/2 = 0.1875 + 0.125 + 0.125 = 0.4375
        CurvePoint P(double x, double f) => new(x, f, 0, 0);
        var curve = new[] { P(0.5, 1.5), P(0, 0), P(1, 1), P(0.25, 0.5) }; // order does not matter
        Assert.Equal(0.9375, FaithfulnessCurve.Cpr(curve), 12);
        Assert.Equal(0.4375, FaithfulnessCurve.Cmd(curve), 12);
    }

    [Fact]
    public void APerfectCurveHasCprOfItsWidthAndCmdZero()
    {
        var curve = FaithfulnessCurve.MibGrid.Select(x => new CurvePoint(x, 1, 0, 0)).ToList();
        Assert.Equal(1 - 0.001, FaithfulnessCurve.Cpr(curve), 12);
        Assert.Equal(0, FaithfulnessCurve.Cmd(curve), 12);
        Assert.Equal(10, FaithfulnessCurve.MibGrid.Count);
    }

    [Fact]
    public void FaithfulnessIsNormalisedBetweenTheEmptyAndTheFullModel()
    {
        Assert.Equal(1, FaithfulnessCurve.Faithfulness(3.5, -1, 3.5));
        Assert.Equal(0, FaithfulnessCurve.Faithfulness(-1, -1, 3.5));
        Assert.Equal(0.5, FaithfulnessCurve.Faithfulness(1.25, -1, 3.5));
        Assert.True(double.IsNaN(FaithfulnessCurve.Faithfulness(1, 2, 2)));
    }
}
