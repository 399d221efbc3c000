namespace Pipelines.Activities.Circuits;

/// <summary>How circuits are chosen from edge scores at each size: MIB's top-n, or greedy growth from the logits.</summary>
public enum SelectionMethod { TopN, Greedy }
