"""The networks a zoo holds and their files: architectures, stacked parameters, checkpoint
files, data sets."""
