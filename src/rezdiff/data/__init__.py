"""Data: the coordinate convention, FieldBatch, datasets, samplers and the FieldDataModule."""
