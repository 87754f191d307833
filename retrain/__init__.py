"""The learning loop: which labels to train on, the trainers, and the promotion of new models."""
