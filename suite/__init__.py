"""The experiment harness: Hydra apps, model and data-set registries, runners, results, reports."""
