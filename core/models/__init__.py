"""The models: versions and their registry, holdout evaluation, tenants' own views, fine-tune jobs,
retrain requests and the dataset pipeline."""
