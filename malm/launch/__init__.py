"""Running the pipeline's stages inline or as submitit/Slurm jobs, and Slurm grids."""
