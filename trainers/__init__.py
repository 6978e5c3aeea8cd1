"""Command-line programs over the public tf_asvae API (``python -m trainers.train``)."""
