"""Training: the epoch loop, checkpoints, DDP, schedules, seeding and the CLIP stand-in pretraining."""
