"""Research code of the Hrrformer project: experiments, baselines and comparisons. Not installed with the package;
run from the repository root as ``python -m research.<module>`` (research/README.md)."""
