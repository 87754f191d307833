"""The ``waimai`` command line: the top floor that starts and drives everything else."""
