"""Pure computations over forests and labels (no Django): values, search metrics, PRM evaluation, preferences."""
