"""VPO: video prompt optimization as a Snakemake workflow over an importable package."""

__version__ = "0.1.0"
