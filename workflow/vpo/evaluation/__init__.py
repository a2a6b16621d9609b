"""The evaluation part of the workflow: held-out queries, each method's prompts, judge answers, metrics."""
