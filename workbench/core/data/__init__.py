"""Data sets as uint8 tensors: named sets, image folders, the generated shapes set, their cache,
and the one normalisation. Import what you need from its module (load_dataset from `load`)."""
